"""One time step per call, with the state carried inside: the streaming (embedding) path.

::

    stream = layer.stream(batch_size=1)        # or Stream(layer, batch_size=1)
    for x_t in feed:                           # x_t: (B, I), or (I,) when batch_size == 1
        y_t = stream.step(x_t)                 # (B, P), or (P,)
    stream.reset()                             # zero the state; reset([2, 5]) zeroes rows 2 and 5

Shapes: ``B`` batch, ``I`` input, ``H`` hidden, ``P`` output (``proj_size`` or ``H``), ``L``
layers. Stepping ``T`` times equals ``layer(x)`` over the ``T`` steps (tested). The weights are
copied (transposed for the kernels) when the stream is made; after changing ``layer.params`` call
:meth:`Stream.refresh`. Each step is one call of a compiled kernel for the whole stack, over
preallocated buffers; an input that is already a C-contiguous array of the layer's dtype is
passed as it is.
"""
import numpy as np

from . import _arrays, _workspace
from .kernels._jit import compiled_for


class Stream:
    """Carries the state of ``layer`` for ``batch_size`` rows and steps it one input at a time.

    ``layer`` must be unidirectional (a reverse direction needs the whole sequence first).
    The whole stack steps in one kernel call over one flat array (weights, state, scratch) and
    an int64 layout table, so a step costs little more than the arithmetic.
    """

    def __init__(self, layer, batch_size=1, state=None):
        if layer.bidirectional:
            raise ValueError("Stream: expected a unidirectional layer, got bidirectional=True "
                             "(the reverse direction needs the whole sequence before step one)")
        self.layer = layer
        self.batch_size = B = _arrays.positive_int(batch_size, "batch_size")
        L = layer.num_layers
        inputs = [layer.input_size] + [layer.output_size] * (L - 1)
        self._sizes = layer.state_sizes()
        # one flat buffer: packed weights, state, scratch (kernels._blocks.stream_layout)
        n_pack = sum(np.size(part) for k in range(L) for part in layer.stream_weights(k))
        n_state = L * B * sum(self._sizes)
        self._buffer = _workspace.aligned_empty(
            (n_pack + n_state + B * layer.stream_work_size(),), layer.dtype)
        self._buffer[...] = 0.0
        self._pack = self._buffer[:n_pack]
        self._state = self._buffer[n_pack:n_pack + n_state]
        self._meta = np.array([L, B, layer.hidden_size, n_pack, n_pack + n_state,
                               *layer.stream_flags(), *inputs] + [1] * B, dtype=np.int64)
        self._dtype = layer.dtype
        self._expected = (B, layer.input_size)
        self._unbatched_shape = (layer.input_size,) if B == 1 else None
        top = (L - 1) * B * sum(self._sizes)            # the last layer's h, first in its block
        self._top = self._state[top:top + B * self._sizes[0]]    # (B*P,) view of the state
        self.refresh()
        self._kernel = compiled_for(layer.stream_kernel,
                                    np.zeros(B * layer.input_size, layer.dtype),
                                    self._buffer, self._meta)
        if state is not None:
            self.state = state

    def refresh(self):
        """Copy the layer's current parameters into the stream (after training, say)."""
        self._pack[...] = np.concatenate([np.ravel(part) for k in range(self.layer.num_layers)
                                          for part in self.layer.stream_weights(k)])

    def _views(self):
        """``[(h, c), ...]`` views into the flat state, one tuple per layer."""
        B, out, off = self.batch_size, [], 0
        for _ in range(self.layer.num_layers):
            parts = []
            for n in self._sizes:
                parts.append(self._state[off:off + B * n].reshape(B, n))
                off += B * n
            out.append(parts)
        return out

    @property
    def state(self):
        """A copy of the carried state in torch's layout (``h`` or ``(h, c)``, ``(L, B, .)``)."""
        views = self._views()
        parts = tuple(np.stack([layer_parts[i] for layer_parts in views])
                      for i in range(len(self._sizes)))
        return parts if len(parts) > 1 else parts[0]

    @state.setter
    def state(self, state):
        parts = self.layer._check_state(state, self.batch_size, unbatched=False)
        for k, layer_parts in enumerate(self._views()):
            for view, part in zip(layer_parts, parts):
                view[...] = part[k]

    def reset(self, slots=None):
        """Zero the state of every row (``slots=None``) or of the rows ``slots`` (indices or a
        boolean mask of length ``batch_size``)."""
        if slots is None:
            self._state[...] = 0.0
            return
        rows = _arrays.slot_index(slots, self.batch_size)
        for layer_parts in self._views():
            for view in layer_parts:
                view[rows] = 0.0

    def step(self, x):
        """Advance one time step: ``x (B, I)`` (or ``(I,)`` when ``batch_size == 1``) ->
        ``y (B, P)`` (or ``(P,)``), a new array."""
        if type(x) is np.ndarray and x.dtype is self._dtype and x.flags.c_contiguous:
            if x.shape == self._unbatched_shape:           # the common case: nothing to convert
                if self._kernel(x, self._buffer, self._meta):    # (False: non-finite, see below)
                    return self._top.copy()
                return self._advance(x, x)
            if x.shape == self._expected:
                return self._advance(x.reshape(-1), x).reshape(self._expected[0], -1)
        x_arr = np.asarray(x)
        unbatched = x_arr.ndim == 1 and self.batch_size == 1
        x_arr = np.ascontiguousarray(_arrays.float_array(
            x_arr.reshape(self._expected) if unbatched else x_arr, "step input x",
            self._dtype, shape=self._expected, finite=False))
        y = self._advance(x_arr.reshape(-1), x_arr)
        return y if unbatched else y.reshape(self._expected[0], -1)

    def _advance(self, x_flat, x):
        """Run the stack on the checked input ``x_flat`` (``B*I``, C-contiguous, the layer's
        dtype); return the top layer's new ``h`` as a copy ``(B*P,)``."""
        if not self._kernel(x_flat, self._buffer, self._meta):
            _arrays.float_array(x, "step input x", self._dtype)        # raises: non-finite
        return self._top.copy()
