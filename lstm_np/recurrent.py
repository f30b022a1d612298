r"""Recurrent layers with torch's constructor, parameter names, shapes, gate order and init.

Shape legend: ``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden size, ``P`` hidden output
size (``proj_size`` if set, else ``H``), ``D`` directions (2 if bidirectional), ``L`` layers.

Three calls on every layer:

- ``y, state = layer(x, state=None, lengths=None)``: inference; keeps nothing, no dropout.
- ``y, state, tape = layer.forward(x, state=None, lengths=None)``: training; keeps in ``tape``
  what BPTT needs (dropout between layers is applied here, from the layer's seeded RNG).
- ``grads = layer.backward(tape, dy, dstate=None)``: :class:`~lstm_np.tape.Gradients`.

``x`` is ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``) or ``(T, I)`` unbatched; ``y`` is
``(T, B, D*P)``. The state is ``(h, c)`` for the LSTM and ``h`` for GRU/RNN, each ``(L*D, B, .)``
(``(L*D, .)`` unbatched), row ``l * D + d`` as in torch. ``lengths`` (one int per sequence) is
torch's ``pack_padded_sequence``: outputs past a sequence's end are zero and the final state is the
one at the sequence's own last step, in both directions.

What is common to the cells (layers x directions, dropout, lengths, batch_first, validation, the
tape) lives in :class:`Recurrent`; a cell adds its gate count and two methods that run one
direction of one layer through its kernels.
"""
import functools

import numpy as np

from . import _arrays, _threads, _workspace
from .kernels import _blas
from .kernels import gru as gru_kernels
from .kernels._blocks import add_rows_f64, transpose_into
from .kernels import _tiles
from .kernels import lstm as lstm_kernels
from .kernels import rnn as rnn_kernels
from .tape import Gradients, Tape

_DIRECTION_SUFFIX = ("", "_reverse")


#: a product over all ``T * B`` rows summing at most one pass of ``k`` (an input projection,
#: ``K = I <= 128``) goes to the tiles where they have AVX-512
#: (:func:`lstm_np.kernels._tiles.tiles_matmul`; else, ``None``, and for longer sums, NumPy's
#: BLAS). Measured on an AVX-512 Xeon, against NumPy's BLAS, inference 0.92-0.96 of the time
#: at (8, 16, 64) to (64, 64, 256) (RNN, GRU), 0.99 at (128, 128, 512). Only layers whose steps
#: use the BLAS make the projection first now (large blocks of rows); on the tiles every cell's
#: steps make their own ``x_t W_ih^T`` (GRU: :func:`lstm_np.kernels.gru.gru_forward`). (The
#: input gradient, ``K = G``, as one such product on the tiles made LSTM training 1.03-1.05 of
#: the time at (64, 64, 256) and (128, 128, 512); the backward loops now make it step by step,
#: see the cells' kernels.)
_ROWS_PRODUCT = _tiles.tiles_matmul if _tiles.VECTOR_BYTES == 64 else None


def _input_projection(x, weight):
    """``x W^T`` for ``x (T, B, I)``, ``weight (G, I)``: ``(T, B, G)`` in reused memory, one
    product over all ``T * B`` rows (in blocks of rows, :func:`lstm_np._threads.matmul`; the
    kernels add the biases where they read it)."""
    T, B, K = x.shape
    out = _workspace.empty((T * B, weight.shape[0]), x.dtype)
    product = _ROWS_PRODUCT if K <= _tiles.DEPTH else None
    rows = _threads.matmul(x.reshape(T * B, K), weight.T, out, product)
    return rows.reshape(T, B, weight.shape[0])


@functools.lru_cache(maxsize=None)
def _projects_input_first(I, P, blas):
    """:func:`lstm_np.kernels._blas.projects_input_first`, worked out once per ``(I, P,
    blas)``: a compiled function called from Python costs about 0.5 us, and several after
    another library's call has taken the caches."""
    return bool(_blas.projects_input_first(I, P, blas))


def _transposed(*weights):
    """``[W_1^T; W_2^T; ..]``: the transposes of 2-D weights with one first dimension ``G``,
    one above the other, as a C-contiguous ``(K_1 + K_2 + .., G)`` array in reused memory (large
    ones copied in blocks, see :func:`lstm_np.kernels._blocks.transpose_into`)."""
    out = _workspace.empty((sum(w.shape[1] for w in weights), weights[0].shape[0]),
                           weights[0].dtype)
    k = 0
    for w in weights:
        transpose_into(out[k:k + w.shape[1]], w)
        k += w.shape[1]
    return out


def _transposed_for(plan, *weights):
    """What a time loop's BLAS reads of its weights under ``plan`` (``(blocks, blas)``):
    their stacked transposes (:func:`_transposed`: ``W_hh^T``, or an LSTM's and RNN's
    ``[W_ih^T; W_hh^T]``) where the steps' products go to the BLAS, else an empty ``(0, G)``:
    the tiles pack their panels from the weights as they are, with no transposed copy."""
    if plan[1]:
        return _transposed(*weights)
    return np.empty((0, weights[0].shape[0]), weights[0].dtype)


def _sum_outer(dz, u, v=None, bias=False):
    """``sum_t dz_t^T [u_t, v_t]`` over all ``T * B`` rows (``[u, v]``: ``u (T, B, K1)`` and,
    if given, ``v (T, B, K2)`` side by side): ``(G, K1 + K2)``, in blocks of its rows
    (:func:`lstm_np._threads.product_blocks`), and ``db``: with ``bias``, ``(G,)`` the sum of
    ``dz`` over time and batch (a bias gradient), else None; every term added in float64 (a long
    float32 sum drifts; NumPy's float64 reduction of float32 data costs 5x more) in row order
    (:func:`~lstm_np.kernels._blocks.add_rows_f64`), in the same blocks and threads, while each
    block of ``dz`` is in cache from its product where it can be (float32). Before, one pass of
    its own over all of ``dz`` on one thread: a float32 LSTM's training step at ``(B, I, H) =
    (64, 64, 256)`` spent 2.0-2.4 ms of its 57 (two threads) or 100 ms (one) there.

    float64: ``[u, v]`` made, then one GEMM per block. float32:
    :func:`lstm_np.kernels._blas.sum_outer_f32`, one BLAS product per 128 rows (their ``[u,
    v]`` put side by side there), eight of them summed by the BLAS and each such group added in
    float64, so that the long reduction (``T * B`` terms) does not drift: same flops, and the
    float32 weight gradients land at least as close to the float64 ones as torch's do
    (measured over three cells, two shapes and three seeds: with 512-row products summed in
    float64 lstm_np was the less accurate in 22 of 72 weight and bias gradients, with 128-row
    ones in 2, both RNN biases, at 1.2x)."""
    G = dz.shape[-1]
    # the kernels take C-contiguous operands (one signature each): a copy only for views
    dz2 = np.ascontiguousarray(dz.reshape(-1, G))
    u2 = np.ascontiguousarray(u.reshape(-1, u.shape[-1]))
    v2 = u2[:, :0] if v is None else np.ascontiguousarray(v.reshape(-1, v.shape[-1]))
    out = np.empty((G, u2.shape[1] + v2.shape[1]), dz.dtype)
    sums = np.zeros(G if bias else 0, np.float64)
    if dz.dtype == np.float64:
        if v is not None:
            u2 = np.concatenate([u2, v2], axis=1,
                                out=_workspace.empty((u2.shape[0], out.shape[1]), dz.dtype))

        def run(g0, g1):
            np.matmul(dz2[:, g0:g1].T, u2, out=out[g0:g1])
            if bias:
                add_rows_f64(dz2, 0, dz2.shape[0], g0, g1, sums)
    else:
        total = _workspace.empty(out.shape, np.float64)

        def run(g0, g1):
            _blas.sum_outer_f32(dz2, u2, v2, out, total, sums, g0, g1)

    _threads.in_blocks(run, _threads.product_blocks(G, dz2.shape[0] * out.shape[1] * dz.itemsize))
    return out, (sums.astype(dz.dtype) if bias else None)


def _sum_outer_pair(dz, u, v, bias=False):
    """``(sum_t dz_t^T u_t, sum_t dz_t^T v_t, db)``, from one :func:`_sum_outer` over ``[u,
    v]``."""
    n_u = u.shape[2]
    both, db = _sum_outer(dz, u, v, bias)
    return np.ascontiguousarray(both[:, :n_u]), np.ascontiguousarray(both[:, n_u:]), db


class Recurrent:
    """Layers x directions of one recurrent cell; see the module docstring for the calls.

    Subclasses set ``gate_count`` and ``state_names`` and implement ``_run_direction`` and
    ``_backprop_direction``.
    """

    gate_count = 1
    state_names = ("h",)
    #: how each step's products are done: ``"loop"`` (the kernels' own register tiles over
    #: weights packed once per call, best up to 32 rows, or a few hundred with AVX-512),
    #: ``"blas"`` (NumPy's BLAS, called from the same compiled time loop) or ``"auto"``
    #: (chosen per call from the rows of a block, see below). The gate math is the same.
    kernel = "auto"
    #: ``"auto"`` picks ``"blas"`` when a block (the batch, or one thread's rows of it) has at
    #: least ``blas_min_rows`` rows. Measured on an AVX2 EPYC (T = 100, all three cells, both
    #: dtypes, best of two medians, time with the tiles / time with the BLAS): 0.61-0.97 for
    #: inference and 0.68-0.98 for training with 1-32 rows (one exception each way, 1.04 and
    #: 1.15); 0.85-1.36 with 64 and 128 rows, where the BLAS's larger blocks won most rows.
    #: With AVX-512 the tiles' vectors are twice as wide (and, since, no tile costs a call), and
    #: on an AVX-512 Xeon the tiles won up to 256 rows: 0.82-0.90 (inference) and 0.83-0.96
    #: (training) with 64 and 128 rows on one thread, 0.91-1.03 with two blocks of 64; with 256
    #: and 512 rows 0.89-1.01. So the BLAS takes over from 512 rows there.
    blas_min_rows = 512 if _tiles.VECTOR_BYTES == 64 else 64

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype=np.float32, seed=None):
        self.input_size = _arrays.positive_int(input_size, "input_size")
        self.hidden_size = _arrays.positive_int(hidden_size, "hidden_size")
        self.num_layers = _arrays.positive_int(num_layers, "num_layers")
        self.proj_size = _arrays.positive_int(proj_size, "proj_size", minimum=0)
        if self.proj_size and self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size: expected 0 or less than hidden_size={hidden_size}, "
                             f"got {proj_size}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a number in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dtype = _arrays.as_dtype(dtype)
        self.rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self.params = {name: self.rng.uniform(-bound, bound, shape).astype(self.dtype)
                       for name, shape in self._param_shapes().items()}
        self._names = {}            # (layer, direction) -> [(short name, name in params)]
        self._plans = {}            # (batch, kernel, blas_min_rows, threads) -> _plan(batch)
        self._all_run = (0, 0, None)  # (B, T, lengths): the last inference's, see _run

    # ----------------------------------------------------------------- sizes and names
    @property
    def num_directions(self):
        """``D``: 2 if bidirectional else 1."""
        return 2 if self.bidirectional else 1

    @property
    def output_size(self):
        """``P``: size of each direction's hidden output (``proj_size`` or ``hidden_size``)."""
        return self.proj_size or self.hidden_size

    def state_sizes(self):
        """Last dimension of each state component: ``(P, H)`` for the LSTM, ``(H,)`` otherwise."""
        return (self.output_size,)

    def _param_shapes(self):
        """torch's ``state_dict()`` keys, shapes and order."""
        G, H, P, D = self.gate_count, self.hidden_size, self.output_size, self.num_directions
        shapes = {}
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else D * P
            for d in range(D):
                sfx = f"_l{layer}{_DIRECTION_SUFFIX[d]}"
                shapes["weight_ih" + sfx] = (G * H, in_size)
                shapes["weight_hh" + sfx] = (G * H, P)
                if self.bias:
                    shapes["bias_ih" + sfx] = (G * H,)
                    shapes["bias_hh" + sfx] = (G * H,)
                if self.proj_size:
                    shapes["weight_hr" + sfx] = (P, H)
        return shapes

    def _weights(self, layer, d):
        """Parameters of one layer and direction under their short names (``weight_ih``, ...),
        read from ``params`` on every call (the names are worked out once)."""
        names = self._names.get((layer, d))
        if names is None:
            sfx = f"_l{layer}{_DIRECTION_SUFFIX[d]}"
            names = self._names[layer, d] = [(name[:-len(sfx)], name) for name in self.params
                                             if name.endswith(sfx)]
        params = self.params
        return {short: params[name] for short, name in names}

    def _biases(self, w):
        """``(b_ih, b_hh)`` of one layer and direction; zeros when the layer has no bias."""
        if self.bias:
            return w["bias_ih"], w["bias_hh"]
        zeros = np.zeros(self.gate_count * self.hidden_size, self.dtype)
        return zeros, zeros

    def _summed_bias(self, w):
        """``b_ih + b_hh`` (zeros without bias): the one bias of cells that add both outside
        every nonlinearity (LSTM, RNN), for their streams (the time loops take both biases and
        sum them themselves: a NumPy call fewer per layer call)."""
        b_ih, b_hh = self._biases(w)
        return b_ih + b_hh

    # ----------------------------------------------------------------- parameters in and out
    def config(self):
        """The constructor arguments (JSON-able) that rebuild this layer's architecture."""
        cfg = dict(input_size=self.input_size, hidden_size=self.hidden_size,
                   num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                   dropout=self.dropout, bidirectional=self.bidirectional,
                   dtype=self.dtype.name)
        if self.proj_size:
            cfg["proj_size"] = self.proj_size
        return cfg

    def state_dict(self):
        """A copy of ``params`` (torch's keys, shapes and order)."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, mapping, strict=True):
        """Load parameters from numpy arrays or anything with ``__array__``/``.numpy()`` (torch
        tensors work without importing torch). Every entry is checked before any is written.

        ``strict=True``: the keys must equal ``params``' keys. ``strict=False``: missing keys keep
        their values, unknown keys are an error all the same (they mean a different architecture).
        Returns ``(missing, unexpected)`` key lists, like torch.
        """
        shapes = self._param_shapes()
        missing = [k for k in shapes if k not in mapping]
        unexpected = [k for k in mapping if k not in shapes]
        if unexpected or (strict and missing):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        staged = {}
        for name, value in mapping.items():
            arr = _arrays.to_numpy(value, name)
            if arr.dtype.kind != "f":
                raise TypeError(f"{name}: expected a floating array, got dtype {arr.dtype}")
            staged[name] = _arrays.float_array(arr.astype(self.dtype), name, self.dtype,
                                               shape=shapes[name])
        for name, arr in staged.items():
            self.params[name][...] = arr   # in place: whoever holds the array sees the values
        return missing, unexpected

    # ----------------------------------------------------------------- validation
    def _check_input(self, x):
        """``x`` -> ``(T, B, I)`` time-major (a view of the caller's array: :meth:`_run` makes
        the one copy it needs), and whether it was unbatched."""
        x = _arrays.float_array(x, "input x", self.dtype, ndim=(2, 3))
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input x: expected input_size {self.input_size} in the last "
                             f"dimension, got shape {x.shape}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[:, None, :]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"input x: expected at least one step and one sequence, got "
                             f"T={x.shape[0]}, B={x.shape[1]}")
        return x, unbatched

    def _check_state(self, state, batch, unbatched, what="state"):
        """``state`` -> tuple of ``(L*D, B, size)`` arrays (zeros when ``None``)."""
        rows = self.num_layers * self.num_directions
        sizes = self.state_sizes()
        if state is None:
            return tuple(np.zeros((rows, batch, n), self.dtype) for n in sizes)
        parts = (state,) if len(sizes) == 1 else state
        if len(sizes) > 1 and (not isinstance(state, (tuple, list)) or len(state) != len(sizes)):
            raise TypeError(f"{what}: expected a tuple {self.state_names}, got "
                            f"{type(state).__name__}")
        out = []
        for name, part, n in zip(self.state_names, parts, sizes):
            want = (rows, n) if unbatched else (rows, batch, n)
            arr = _arrays.float_array(part, f"{what} {name}", self.dtype, shape=want)
            out.append(np.ascontiguousarray(arr.reshape(rows, batch, n)))
        return tuple(out)

    def _pack_state(self, parts, unbatched):
        parts = tuple(p[:, 0, :] if unbatched else p for p in parts)
        return parts if len(parts) > 1 else parts[0]

    def _to_caller_layout(self, y, unbatched):
        if unbatched:
            return y[:, 0, :]
        return np.ascontiguousarray(y.transpose(1, 0, 2)) if self.batch_first else y

    # ----------------------------------------------------------------- the three calls
    def __call__(self, x, state=None, lengths=None):
        """Inference: ``y, state``. No dropout, nothing kept."""
        y, state, _ = self._run(x, state, lengths, rng=None)
        return y, state

    def forward(self, x, state=None, lengths=None, rng=None):
        """Training forward: ``y, state, tape``. Dropout between layers draws from ``rng``
        (default: the layer's own seeded generator ``self.rng``)."""
        return self._run(x, state, lengths, rng=self.rng if rng is None else rng)

    def _run(self, x, state, lengths, rng):
        x, unbatched = self._check_input(x)
        T, B, _ = x.shape                                   # (T, B, I)
        # None: every state starts at zero, which the time loops write (no zeros made first)
        state0 = None if state is None else self._check_state(state, B, unbatched)
        all_run = lengths is None                           # every sequence runs all T steps
        training = rng is not None
        if all_run and not training:        # inference only reads it, and no tape keeps it:
            kept = self._all_run            # the last such call's (B,) Ts, if (B, T) match
            if kept[:2] != (B, T):          # (read once: another thread may replace it)
                kept = self._all_run = (B, T, _arrays.lengths_array(None, B, T))
            lengths = kept[2]
        else:
            lengths = _arrays.lengths_array(lengths, B, T)
        past_end = None if all_run else _past_end(lengths, T)   # (T, B) or None
        D, P = self.num_directions, self.output_size
        inputs, steps, weights, masks = [], [], [], []
        finals = [np.empty((self.num_layers * D, B, n), self.dtype) for n in self.state_sizes()]
        # the tape must own its input: never keep the caller's array (or a view of it); in
        # inference the kernels read the caller's array unless it is not C-contiguous (a
        # batch_first input), read-only or unaligned: one copy at most, either way
        layer_in = _workspace.copy(x) if training else _arrays.kernel_operand(x)
        for layer in range(self.num_layers):
            inputs.append(layer_in)
            y = None
            for d in range(D):
                row = layer * D + d
                w = self._weights(layer, d)
                init = (None,) * len(finals) if state0 is None else tuple(s[row] for s in state0)
                if training:
                    out, final, kept = self._run_direction(w, layer_in, init, lengths, bool(d))
                else:
                    (out, final), kept = self._infer_direction(w, layer_in, init, lengths,
                                                               bool(d)), None
                if D == 1 and not training:     # nothing else holds the state sequence
                    y = out                         # (T, B, P): no copy
                else:
                    if y is None:                   # (T, B, D*P)
                        y = _workspace.empty((T, B, D * P), self.dtype, offset_like=out)
                    y[:, :, d * P:(d + 1) * P] = out
                for dst, src in zip(finals, final):
                    dst[row] = src
                steps.append(kept)
                weights.append(w)
            if past_end is not None:
                y[past_end] = 0.0
            mask = None
            if training and self.dropout and layer < self.num_layers - 1:
                keep = 1.0 - self.dropout
                mask = (rng.random(y.shape) < keep).astype(self.dtype) / self.dtype.type(keep)
                y = y * mask
            masks.append(mask)
            layer_in = y
        tape = None if not training else Tape(
            owner=id(self), inputs=inputs, steps=steps, weights=weights, dropout_masks=masks,
            lengths=lengths, output_shape=y.shape, batch_first=self.batch_first,
            unbatched=unbatched)
        return self._to_caller_layout(y, unbatched), self._pack_state(finals, unbatched), tape

    def backward(self, tape, dy, dstate=None):
        """BPTT through the whole stack: :class:`~lstm_np.tape.Gradients`.

        ``dy``: gradient of the loss w.r.t. ``y`` (same shape as ``y``); ``dstate``: w.r.t. the
        final state (same structure as ``state``; ``None`` = zeros). Gradients of outputs past a
        sequence's length are ignored (those outputs are constant zeros).
        """
        return self._backward(tape, dy, dstate, check_finite=True)

    def _backward(self, tape, dy, dstate, check_finite):
        """:meth:`backward`; a model that chains layers passes ``check_finite=False`` for the
        gradients it computed itself (its own caller checks the result)."""
        if not isinstance(tape, Tape) or tape.owner != id(self):
            got = "a tape of another layer" if isinstance(tape, Tape) else type(tape).__name__
            raise ValueError(f"tape: expected the tape returned by this layer's forward(), "
                             f"got {got}")
        T, B, DP = tape.output_shape
        want = (T, DP) if tape.unbatched else ((B, T, DP) if tape.batch_first else (T, B, DP))
        dy = _arrays.float_array(dy, "dy", self.dtype, shape=want, finite=check_finite)
        if tape.unbatched:
            dy = dy[:, None, :]
        elif tape.batch_first:
            dy = dy.transpose(1, 0, 2)
        dfinal = self._check_state(dstate, B, tape.unbatched, what="dstate")
        D, P = self.num_directions, self.output_size
        L = self.num_layers
        past_end = _past_end(tape.lengths, T)
        dstate0 = [np.empty_like(s) for s in dfinal]
        dparams = {}
        dh_rows, dc_rows = [None] * (L * D), [None] * (L * D)
        # (T, B, D*P): the top layer's gradient is edited only where steps run past a
        # sequence's end (dropout masks sit between layers), so only then is it copied; else
        # the kernels read the caller's dy as it is (a pass over T * B * D * P entries fewer)
        dlayer = dy if past_end is None else _workspace.copy(dy)
        for layer in reversed(range(L)):
            mask = tape.dropout_masks[layer]
            if mask is not None:
                dlayer *= mask
            if past_end is not None:
                dlayer[past_end] = 0.0
            dx = None
            for d in range(D):
                row = layer * D + d
                dout = _arrays.kernel_operand(dlayer[:, :, d * P:(d + 1) * P])
                dxd, dinit, dw, dh_steps, dc_steps = self._backprop_direction(
                    tape.weights[row], tape.inputs[layer], tape.steps[row], dout,
                    tuple(s[row].copy() for s in dfinal), tape.lengths, bool(d))
                dx = dxd if dx is None else dx + dxd
                for dst, src in zip(dstate0, dinit):
                    dst[row] = src
                sfx = f"_l{layer}{_DIRECTION_SUFFIX[d]}"
                for name, value in dw.items():
                    dparams[name + sfx] = value
                dh_rows[row], dc_rows[row] = dh_steps, dc_steps
            dlayer = dx
        dparams = {name: dparams[name] for name in self.params}
        return Gradients(dx=self._to_caller_layout(dlayer, tape.unbatched),
                         dstate=self._pack_state(dstate0, tape.unbatched),
                         dparams=dparams, dh=_stack_rows(dh_rows), dc=_stack_rows(dc_rows))

    def stream(self, batch_size=1, state=None):
        """A :class:`~lstm_np.streaming.Stream`: one time step per call, state carried inside."""
        from .streaming import Stream
        return Stream(self, batch_size, state)

    # ----------------------------------------------------------------- per cell
    def _plan(self, batch):
        """``(blocks, blas)``: the blocks of the ``batch`` rows for the threads
        (:func:`lstm_np.set_num_threads`; each with enough work per step to be worth a thread,
        :func:`lstm_np._threads.step_blocks`) and whether each step's products go to the BLAS,
        per ``self.kernel``."""
        key = (batch, self.kernel, self.blas_min_rows, _threads.get_num_threads())
        plan = self._plans.get(key)
        if plan is None:        # worked out once per key: 0.16 us a call instead of 1.0
            if self.kernel not in ("auto", "loop", "blas"):
                raise ValueError(f"kernel: expected 'auto', 'loop' or 'blas', got "
                                 f"{self.kernel!r}")
            row_step = self.gate_count * self.hidden_size * (self.input_size + self.output_size)
            blocks = _threads.step_blocks(batch, row_step * self.dtype.itemsize)
            if self.kernel == "auto":
                blas = min(b1 - b0 for b0, b1 in blocks) >= self.blas_min_rows
            else:
                blas = self.kernel == "blas"
            plan = self._plans[key] = (blocks, blas)
        return plan

    def _time_loop(self, batch, kernel, twin, args, scratch, plan=None):
        """Run the time-loop ``kernel`` as ``kernel(*args, *work, blas, b0, b1)`` over blocks
        of the ``batch`` rows (in parallel threads), ``work`` being one ``(rows, n)`` scratch
        array per ``n`` in ``scratch``; ``(blocks, blas)`` from ``plan`` (default
        :meth:`_plan`), for a caller whose arguments depend on ``blas``. Where the compiled loop
        cannot call NumPy's BLAS, the BLAS case runs the Python-stepped ``twin`` (same
        arguments) instead."""
        blocks, blas = self._plan(batch) if plan is None else plan
        if blas and not _blas.FOUND:     # one block: set_num_threads refuses n > 1 then
            kernel = twin

        def run(b0, b1):
            kernel(*args, *[np.empty((b1 - b0, n), self.dtype) for n in scratch], blas, b0, b1)

        _threads.in_blocks(run, blocks)

    def _input_part(self, w, x, plan):
        """``x W_ih^T (T, B, G H)`` by one big product where :meth:`_input_first` says so;
        else an empty ``(T, B, 0)``: each step makes its ``x_t W_ih^T`` in the loop."""
        if self._input_first(w, plan):
            return _input_projection(x, w["weight_ih"])
        return np.empty(x.shape[:2] + (0,), x.dtype)

    @staticmethod
    def _input_first(w, plan):
        """Whether ``x W_ih^T`` is made for all steps before the time loop: where the steps use
        the BLAS (``plan``) and :func:`lstm_np.kernels._blas.projects_input_first` says so (else
        :func:`lstm_np.kernels._blas.step_product` makes it in the step)."""
        return _projects_input_first(w["weight_ih"].shape[1], w["weight_hh"].shape[1], plan[1])

    def _run_direction(self, w, x, state0, lengths, reverse):
        """Run one direction of one layer: ``(out (T, B, P), final_state, kept_for_backward)``.
        ``state0``: the initial state, one ``(B, n)`` array per part, or ``None`` per part for
        zeros."""
        raise NotImplementedError

    def _infer_direction(self, w, x, state0, lengths, reverse):
        """Inference of one direction: ``(out (T, B, P), final_state)``. By default the training
        forward with its tape dropped; a cell may override it to keep no tape at all."""
        out, final, _ = self._run_direction(w, x, state0, lengths, reverse)
        return out, final

    def _backprop_direction(self, w, x, kept, dy, dfinal, lengths, reverse):
        """BPTT of one direction: ``(dx, dstate0, dweights, dh_steps, dc_steps or None)``."""
        raise NotImplementedError

    def __repr__(self):
        opts = [f"{self.input_size}", f"{self.hidden_size}"]
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False),
                              ("dropout", 0.0), ("bidirectional", False), ("proj_size", 0)):
            if getattr(self, name) != default:
                opts.append(f"{name}={getattr(self, name)!r}")
        return f"{type(self).__name__}({', '.join(opts)}, dtype={self.dtype})"


def _stack_rows(rows):
    """``(L*D, T, B, .)`` from one array per layer and direction (``None`` if there are none);
    a single layer's array is taken as it is, without a copy."""
    if rows[0] is None:
        return None
    return rows[0][None] if len(rows) == 1 else np.stack(rows)


def _past_end(lengths, T):
    """The ``(T, B)`` mask of steps past each sequence's length, or None when every sequence
    runs all ``T`` steps (then nothing needs masking)."""
    if lengths.min() >= T:
        return None
    return np.arange(T)[:, None] >= lengths[None, :]


def _state_sequence(T, B, n, dtype, init, reverse):
    """``(T + 1, B, n)`` state sequence with the initial state ``init`` (``(B, n)``) in place
    (index 0, or T if ``reverse``); for ``init = None`` (zeros) the time loop zeroes it (its
    ``zero_init``)."""
    seq = _workspace.empty((T + 1, B, n), dtype)
    if init is not None:
        seq[T if reverse else 0] = init
    return seq


def _outputs(seq, reverse):
    """The per-step outputs ``(T, B, n)`` and the final state ``(B, n)`` of a state sequence."""
    T = seq.shape[0] - 1
    return (seq[:T], seq[0]) if reverse else (seq[1:], seq[T])


def _previous(seq, reverse):
    """The state each step started from, ``(T, B, n)``, in time order."""
    T = seq.shape[0] - 1
    return seq[1:] if reverse else seq[:T]


class LSTM(Recurrent):
    r"""Long short-term memory, ``torch.nn.LSTM``'s constructor, parameters and equations.

    ::

        i = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
        f = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        g = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        o = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)            (times W_hr^T when proj_size > 0)

    Parameters (per layer ``k``, ``_reverse`` for the second direction): ``weight_ih_l{k}``
    ``(4H, I_k)``, ``weight_hh_l{k}`` ``(4H, P)``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``(4H,)``,
    ``weight_hr_l{k}`` ``(P, H)``; gate blocks in the order ``i, f, g, o``. State ``(h, c)`` with
    ``h (L*D, B, P)`` and ``c (L*D, B, H)``. Backward equations: :mod:`lstm_np.kernels.lstm`.
    """

    gate_count = 4
    state_names = ("h", "c")
    stream_kernel = staticmethod(lstm_kernels.lstm_stream)

    def state_sizes(self):
        return (self.output_size, self.hidden_size)

    def stream_work_size(self):
        return 7 * self.hidden_size

    def stream_flags(self):
        return [self.output_size, int(self.proj_size > 0)]

    def stream_weights(self, layer):
        w = self._weights(layer, 0)
        parts = [w["weight_ih"].T, w["weight_hh"].T, self._summed_bias(w)]
        return parts + ([w["weight_hr"].T] if self.proj_size else [])

    def _run_direction(self, w, x, state0, lengths, reverse):
        T, B, _ = x.shape
        H, P = self.hidden_size, self.output_size
        dt = self.dtype
        plan = self._plan(B)
        xw = self._input_part(w, x, plan)                               # (T, B, 4H or 0)
        h_seq = _state_sequence(T, B, P, dt, state0[0], reverse)        # (T+1, B, P)
        c_seq = _state_sequence(T, B, H, dt, state0[1], reverse)        # (T+1, B, H)
        # step t reads xw[t] before writing gates[t]: one buffer, not two
        gates = xw if xw.shape[2] else _workspace.empty((T, B, 4 * H), dt)
        tanh_c = _workspace.empty((T, B, H), dt)
        self._forward_loop(w, x, xw, lengths, reverse, state0[0] is None, gates, h_seq, c_seq,
                           tanh_c, plan)
        out, h_n = _outputs(h_seq, reverse)
        _, c_n = _outputs(c_seq, reverse)
        kept = {"gates": gates, "h_seq": h_seq, "c_seq": c_seq, "tanh_c": tanh_c}
        return out, (h_n, c_n), kept

    def _infer_direction(self, w, x, state0, lengths, reverse):
        T, B, _ = x.shape
        H, P = self.hidden_size, self.output_size
        dt = self.dtype
        h_seq = _state_sequence(T, B, P, dt, state0[0], reverse)        # (T+1, B, P)
        # c ping-pong: the steps index c modulo 2 (the gates and tanh(c) modulo 1)
        cc = _workspace.empty((2, B, H), dt)
        init = T if reverse else 0
        if state0[1] is not None:
            cc[init % 2] = state0[1]
        plan = self._plan(B)
        self._forward_loop(w, x, self._input_part(w, x, plan), lengths, reverse,
                           state0[0] is None, _workspace.empty((1, B, 4 * H), dt), h_seq, cc,
                           _workspace.empty((1, B, H), dt), plan)
        out, h_n = _outputs(h_seq, reverse)
        return out, (h_n, cc[(T - init) % 2])

    def _forward_loop(self, w, x, xw, lengths, reverse, zero_init, gates, h_seq, c_seq, tanh_c,
                      plan):
        """:func:`~lstm_np.kernels.lstm.lstm_forward` (full records or one step's scratch, as
        there) over the batch, in blocks of rows with their own scratch, as ``plan`` says; with
        ``zero_init`` the loop zeroes the initial state first."""
        B = h_seq.shape[1]
        H, dt = self.hidden_size, self.dtype
        has_proj = self.proj_size > 0
        w_hr_t = _transposed(w["weight_hr"]) if has_proj else np.zeros((1, 1), dt)
        w_ih, w_hh = w["weight_ih"], w["weight_hh"]
        w_t = _transposed_for(plan, w_ih, w_hh)                          # (I + P, 4H) or (0, 4H)
        self._time_loop(B, lstm_kernels.lstm_forward, lstm_kernels.lstm_forward_blas,
                        (x, w_ih, w_hh, w_t, xw, *self._biases(w), w_hr_t, has_proj,
                         lengths, reverse, zero_init, gates, h_seq, c_seq, tanh_c),
                        # the (rows, 4H) scratch ``a`` only where x W_ih^T was made first
                        (4 * H if xw.shape[2] else 0, H, w_ih.shape[1] + w_hh.shape[1]), plan)

    def _backprop_direction(self, w, x, kept, dy, dfinal, lengths, reverse):
        T, B, _ = x.shape
        H, P = self.hidden_size, self.output_size
        dt = self.dtype
        dh, dc = dfinal
        da = _workspace.empty((T, B, 4 * H), dt)
        dh_steps = _workspace.empty((T, B, P), dt)
        dc_steps = _workspace.empty((T, B, H), dt)
        dx = _workspace.empty(x.shape, dt)
        has_proj = self.proj_size > 0
        w_hr = w["weight_hr"] if has_proj else np.zeros((1, 1), dt)
        self._time_loop(B, lstm_kernels.lstm_backward, lstm_kernels.lstm_backward_blas,
                        (dy, kept["gates"], kept["c_seq"], kept["tanh_c"], w["weight_ih"],
                         w["weight_hh"], w_hr, has_proj, lengths, reverse, dh, dc, da, dh_steps,
                         dc_steps, dx), (H,))
        dw_ih, dw_hh, db = _sum_outer_pair(da, x, _previous(kept["h_seq"], reverse), self.bias)
        dw = {"weight_ih": dw_ih, "weight_hh": dw_hh}
        if self.bias:
            dw["bias_ih"], dw["bias_hh"] = db, db.copy()
        if has_proj:
            m = kept["gates"][:, :, 3 * H:] * kept["tanh_c"]             # (T, B, H)
            dw["weight_hr"], _ = _sum_outer(dh_steps, m)
        return dx, (dh, dc), dw, dh_steps, dc_steps


class GRU(Recurrent):
    r"""Gated recurrent unit, ``torch.nn.GRU``'s constructor, parameters and equations.

    ::

        r = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))      reset_after=True (torch)
        n = tanh(W_in x_t + b_in + W_hn (r * h_{t-1}) + b_hn)      reset_after=False
        h_t = (1 - z) * n + z * h_{t-1}

    ``reset_after=False`` is the other published form (Keras ``reset_after=False``, ONNX
    ``linear_before_reset=0``); torch has none, the parameters keep the same names and shapes.
    Parameters: ``weight_ih_l{k}`` ``(3H, I_k)``, ``weight_hh_l{k}`` ``(3H, H)``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``(3H,)``, gate blocks ``r, z, n``. State ``h (L*D, B, H)``.
    Backward equations: :mod:`lstm_np.kernels.gru`.
    """

    gate_count = 3
    stream_kernel = staticmethod(gru_kernels.gru_stream)

    def config(self):
        return {**super().config(), "reset_after": self.reset_after}

    def stream_work_size(self):
        return 10 * self.hidden_size

    def stream_flags(self):
        return [int(self.reset_after)]

    def stream_weights(self, layer):
        w = self._weights(layer, 0)
        return [w["weight_ih"].T, w["weight_hh"].T, *self._biases(w)]

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 reset_after=True):
        self.reset_after = bool(reset_after)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, dtype, seed)

    def _run_direction(self, w, x, state0, lengths, reverse):
        return self._forward_direction(w, x, state0, lengths, reverse, True)

    def _infer_direction(self, w, x, state0, lengths, reverse):
        out, final, _ = self._forward_direction(w, x, state0, lengths, reverse, False)
        return out, final

    @staticmethod
    def _input_first(w, plan):
        """Wherever the steps use the BLAS: the GRU's steps make ``x_t W_ih^T`` on the tiles
        only (:func:`lstm_np.kernels.gru.gru_forward`)."""
        return plan[1]

    def _forward_direction(self, w, x, state0, lengths, reverse, keep):
        """:meth:`_run_direction`; without ``keep`` (inference) the gates and ``hn`` go to one
        step's scratch, which every step reuses, and nothing is kept (``None`` for the record):
        no ``(T, B, 3H)`` gates and no ``(T, B, H)`` ``hn`` are written. On the tiles each step
        makes its ``x_t W_ih^T`` into its row of the gates (training: the record's row); on the
        BLAS ``x W_ih^T`` is made for all steps first, and the training record is that array,
        each gate entry written after its ``xw`` entry is read."""
        T, B, _ = x.shape
        H, dt = self.hidden_size, self.dtype
        plan = self._plan(B)
        xw = self._input_part(w, x, plan)                               # (T, B, 3H or 0)
        b_ih, b_hh = self._biases(w)
        h_seq = _state_sequence(T, B, H, dt, state0[0], reverse)        # (T+1, B, H)
        if keep:
            gates = xw if xw.shape[2] else _workspace.empty((T, B, 3 * H), dt)
            hn = _workspace.empty((T, B, H), dt)
        else:
            gates, hn = _workspace.empty((1, B, 3 * H), dt), _workspace.empty((1, B, H), dt)
        self._time_loop(B, gru_kernels.gru_forward, gru_kernels.gru_forward_blas,
                        (x, w["weight_ih"], xw, b_ih, w["weight_hh"],
                         _transposed_for(plan, w["weight_hh"]), b_hh, self.reset_after,
                         lengths, reverse, state0[0] is None, gates, h_seq, hn), (3 * H,), plan)
        out, h_n = _outputs(h_seq, reverse)
        return out, (h_n,), ({"gates": gates, "h_seq": h_seq, "hn": hn} if keep else None)

    def _backprop_direction(self, w, x, kept, dy, dfinal, lengths, reverse):
        T, B, _ = x.shape
        H, dt = self.hidden_size, self.dtype
        (dh,) = dfinal
        dxw = _workspace.empty((T, B, 3 * H), dt)
        dhw = _workspace.empty((T, B, 3 * H), dt)
        dh_steps = _workspace.empty((T, B, H), dt)
        dx = _workspace.empty(x.shape, dt)
        self._time_loop(B, gru_kernels.gru_backward, gru_kernels.gru_backward_blas,
                        (dy, kept["gates"], kept["h_seq"], kept["hn"], w["weight_ih"],
                         w["weight_hh"], self.reset_after, lengths, reverse, dh, dxw, dhw,
                         dh_steps, dx), (H,))
        h_prev = _previous(kept["h_seq"], reverse)
        if self.reset_after:
            dw_hh, db_hh = _sum_outer(dhw, h_prev, bias=self.bias)
        else:   # the n block multiplies r * h_prev, kept as hn: the blocks one after the other
            (rz, db_rz), (n, db_n) = (_sum_outer(dhw[:, :, :2 * H], h_prev, bias=self.bias),
                                      _sum_outer(dhw[:, :, 2 * H:], kept["hn"], bias=self.bias))
            dw_hh = np.concatenate([rz, n])
            db_hh = np.concatenate([db_rz, db_n]) if self.bias else None
        dw_ih, db_ih = _sum_outer(dxw, x, bias=self.bias)
        dw = {"weight_ih": dw_ih, "weight_hh": dw_hh}
        if self.bias:
            dw["bias_ih"], dw["bias_hh"] = db_ih, db_hh
        return dx, (dh,), dw, dh_steps, None


class RNN(Recurrent):
    r"""Elman RNN, ``torch.nn.RNN``'s constructor (``nonlinearity`` fourth, as in torch),
    parameters and equations::

        h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   phi = tanh or relu

    Parameters: ``weight_ih_l{k}`` ``(H, I_k)``, ``weight_hh_l{k}`` ``(H, H)``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` ``(H,)``. State ``h (L*D, B, H)``. Backward: :mod:`lstm_np.kernels.rnn`.
    """

    gate_count = 1
    stream_kernel = staticmethod(rnn_kernels.rnn_stream)

    def config(self):
        return {**super().config(), "nonlinearity": self.nonlinearity}

    def stream_work_size(self):
        return 2 * self.hidden_size

    def stream_flags(self):
        return [int(self.nonlinearity == "relu")]

    def stream_weights(self, layer):
        w = self._weights(layer, 0)
        return [w["weight_ih"].T, w["weight_hh"].T, self._summed_bias(w)]

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32,
                 seed=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, dtype, seed)

    def _run_direction(self, w, x, state0, lengths, reverse):
        T, B, _ = x.shape
        H, dt = self.hidden_size, self.dtype
        plan = self._plan(B)
        xw = self._input_part(w, x, plan)                               # (T, B, H or 0)
        h_seq = _state_sequence(T, B, H, dt, state0[0], reverse)        # (T+1, B, H)
        w_ih, w_hh = w["weight_ih"], w["weight_hh"]
        w_t = _transposed_for(plan, w_ih, w_hh)                          # (I + H, H) or (0, H)
        self._time_loop(B, rnn_kernels.rnn_forward, rnn_kernels.rnn_forward_blas,
                        (x, w_ih, w_hh, w_t, xw, *self._biases(w),
                         self.nonlinearity == "relu", lengths, reverse, state0[0] is None, h_seq),
                        (H, w_ih.shape[1] + H), plan)
        out, h_n = _outputs(h_seq, reverse)
        return out, (h_n,), {"h_seq": h_seq}

    def _backprop_direction(self, w, x, kept, dy, dfinal, lengths, reverse):
        T, B, _ = x.shape
        H, dt = self.hidden_size, self.dtype
        (dh,) = dfinal
        da = _workspace.empty((T, B, H), dt)
        dh_steps = _workspace.empty((T, B, H), dt)
        dx = _workspace.empty(x.shape, dt)
        self._time_loop(B, rnn_kernels.rnn_backward, rnn_kernels.rnn_backward_blas,
                        (dy, kept["h_seq"], w["weight_ih"], w["weight_hh"],
                         self.nonlinearity == "relu", lengths, reverse, dh, da, dh_steps, dx), ())
        dw_ih, dw_hh, db = _sum_outer_pair(da, x, _previous(kept["h_seq"], reverse), self.bias)
        dw = {"weight_ih": dw_ih, "weight_hh": dw_hh}
        if self.bias:
            dw["bias_ih"], dw["bias_hh"] = db, db.copy()
        return dx, (dh,), dw, dh_steps, None
