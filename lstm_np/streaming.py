"""One time step per call, with the state carried inside: the streaming (embedding) path.

::

    stream = layer.stream(batch_size=1)        # or Stream(layer, batch_size=1)
    for x_t in feed:                           # x_t: (B, I), or (I,) when batch_size == 1
        y_t = stream.step(x_t)                 # (B, P), or (P,)
    stream.reset()                             # zero the state; reset([2, 5]) zeroes rows 2 and 5

Shapes: ``B`` batch, ``I`` input, ``H`` hidden, ``P`` output (``proj_size`` or ``H``), ``L``
layers. Stepping ``T`` times equals ``layer(x)`` over the ``T`` steps (tested). The weights are
copied (transposed for the kernels) when the stream is made; after changing ``layer.params`` call
:meth:`Stream.refresh`. Each step is one Numba call per layer over preallocated buffers.
"""
import numpy as np

from . import _arrays


class Stream:
    """Carries the state of ``layer`` for ``batch_size`` rows and steps it one input at a time.

    ``layer`` must be unidirectional (a reverse direction needs the whole sequence first).
    """

    def __init__(self, layer, batch_size=1, state=None):
        if layer.bidirectional:
            raise ValueError("Stream: expected a unidirectional layer, got bidirectional=True "
                             "(the reverse direction needs the whole sequence before step one)")
        self.layer = layer
        self.batch_size = _arrays.positive_int(batch_size, "batch_size")
        self._ones = np.ones(self.batch_size, np.int64)
        self._work = np.empty(self.batch_size * layer.step_work_size(), layer.dtype)
        self._expected = (self.batch_size, layer.input_size)
        self.refresh()
        self._state = None
        self.state = state

    def refresh(self):
        """Copy the layer's current parameters into the stream (after training, say)."""
        self._weights = [self.layer.step_weights(k) for k in range(self.layer.num_layers)]

    @property
    def state(self):
        """A copy of the carried state in torch's layout (``h`` or ``(h, c)``, ``(L, B, .)``)."""
        parts = tuple(np.stack([layer_state[i] for layer_state in self._state])
                      for i in range(len(self.layer.state_names)))
        return parts if len(parts) > 1 else parts[0]

    @state.setter
    def state(self, state):
        parts = self.layer._check_state(state, self.batch_size, unbatched=False)
        self._state = [tuple(np.array(p[k], order="C") for p in parts)
                       for k in range(self.layer.num_layers)]

    def reset(self, slots=None):
        """Zero the state of every row (``slots=None``) or of the rows ``slots`` (indices or a
        boolean mask of length ``batch_size``)."""
        rows = slice(None) if slots is None else _arrays.slot_index(slots, self.batch_size)
        for layer_state in self._state:
            for part in layer_state:
                part[rows] = 0.0

    def step(self, x):
        """Advance one time step: ``x (B, I)`` (or ``(I,)`` when ``batch_size == 1``) ->
        ``y (B, P)`` (or ``(P,)``), a new array."""
        x_arr = np.asarray(x)
        unbatched = x_arr.ndim == 1 and self.batch_size == 1
        if unbatched:
            x_arr = x_arr[None, :]
        if x_arr.shape != self._expected or x_arr.dtype != self.layer.dtype \
                or not x_arr.flags.c_contiguous:
            x_arr = np.ascontiguousarray(_arrays.float_array(
                x_arr, "step input x", self.layer.dtype, shape=self._expected, finite=False))
        step = self.layer.step_kernel
        inp = x_arr
        for weights, layer_state in zip(self._weights, self._state):
            if not step(inp, *weights, self._ones, *layer_state, self._work):
                # only the first layer can see a non-finite input; nothing was changed
                _arrays.float_array(x_arr, "step input x", self.layer.dtype)
                raise ValueError("step: a layer produced non-finite values")  # pragma: no cover
            inp = layer_state[0]
        out = inp.copy()
        return out[0] if unbatched else out
