r"""LSTM kernels: forward over T steps, backward (BPTT) over T steps, one streaming step.

Shapes: ``T`` steps, ``B`` batch, ``H`` hidden, ``P`` size of the hidden output (``P = H`` without
projection, ``P = proj_size`` with it). Everything is time-major and C-contiguous; one dtype.

Forward, gate order ``i, f, g, o`` as in ``torch.nn.LSTM``::

    a_t = x_t W_ih^T + h_{t-1} W_hh^T + (b_ih + b_hh)         (B, 4H)  x-part precomputed
                                  (BLAS steps) or made in the step (tiles: _blas.step_product);
                                  the bias added last, where the gates are activated
    i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
    c_t = f * c_{t-1} + i * g
    m_t = o * tanh(c_t)
    h_t = m_t                   (no projection)
    h_t = m_t W_hr^T            (projection, h_t is (B, P))

Backward, with ``dh_t`` the total gradient reaching ``h_t`` (from the output ``y_t`` and from
step ``t + 1``) and ``dc`` the gradient carried from step ``t + 1`` into ``c_t``::

    dm_t    = dh_t                  or  dh_t W_hr        (projection; dW_hr += dh_t^T m_t)
    dc_t    = dc + dm_t * o * (1 - tanh(c_t)^2)
    da_i    = dc_t * g * i (1 - i)
    da_f    = dc_t * c_{t-1} * f (1 - f)
    da_g    = dc_t * i * (1 - g^2)
    da_o    = dm_t * tanh(c_t) * o (1 - o)
    dc_{t-1} carried = dc_t * f
    dh_{t-1} carried = da_t W_hh
    dx_t            = da_t W_ih          (in the loop, while da_t is in cache)

and after the loop, as single products over all ``T * B`` rows (done by the caller)::

    dW_ih = da^T x    dW_hh = da^T h_{prev}    db_ih = db_hh = sum da

Variable lengths: a row ``b`` with ``t >= lengths[b]`` does not step: its state is carried
unchanged, its gates are left at zero, and in backward its gradients pass straight through.
For ``reverse=True`` the time loop runs from ``T - 1`` down to 0, so a short sequence starts at
its own last step, exactly as torch's packed sequences do.
"""
import numpy as np

from ._activations import sigmoid, tanh
from ._blas import prepare, prepare_step, product, step_product, step_product_numpy
from ._blocks import (add_into, all_finite, carry_past_end, copy_into, matmul_add,
                      matmul_into, step_indices, stream_layout, take_block, zero_initial,
                      zero_initial_numpy)
from ._jit import jit, jit_borrowing, wide_vectors


@jit_borrowing
def lstm_cell(gates, xw, bias, a, c_prev, t, lengths, c, tanh_c, m):
    """Gate math of one step for all rows, in place in ``gates (B, 4H)``, which leaves holding
    the activated ``i, f, g, o``. The step's products: in ``gates`` already if ``a`` is
    ``gates`` itself (the products wrote them there); else (``x W_ih^T`` made before the loop)
    ``a (B, 4H)`` holds the recurrent product ``h_{t-1} W_hh^T`` and ``a + xw`` is summed in
    ``a`` (overwritten) and copied into ``gates`` (which may be ``xw`` itself: a loop that
    reads and writes one array through two names is not vectorised, so the sum goes into the
    scratch); ``xw (B, 4H)``. The bias ``(4H,)`` is added as the gates are activated
    (:func:`lstm_cell_row`).

    Writes ``c (B, H)``, ``tanh_c (B, H)`` and ``m = o * tanh(c) (B, H)``. Rows past their
    length copy ``c_prev`` and leave zeros.
    """
    wide_vectors()
    B, H = c.shape
    in_gates = a.ctypes.data == gates.ctypes.data
    for b in range(B):
        if t >= lengths[b]:
            gates[b, :] = 0.0
            copy_into(c[b], c_prev[b])
            tanh_c[b, :] = 0.0
            m[b, :] = 0.0
            continue
        if not in_gates:
            a_b = a[b]
            x_b = xw[b]
            for j in range(4 * H):
                a_b[j] += x_b[j]
            copy_into(gates[b], a_b)
        lstm_cell_row(gates[b], bias, c_prev[b], c[b], tanh_c[b], m[b])


@jit_borrowing
def lstm_cell_row(gates, bias, c_prev, c, tanh_c, m):
    """The gate math of one row, in place: ``gates (4H,)`` enters holding the pre-activations
    but for the bias ``(4H,)``, added here (the step's products need no pass to put it in
    first), and leaves holding the activated ``i, f, g, o``; with ``c_prev (H,)`` writes
    ``c``, ``tanh_c`` and ``m (H,)``. The step's products write the pre-activations into the
    gates' rows (inference: a per-step scratch; training: the tape's row) and nothing else
    holds them. In inference a second ``(B, 4H)`` block held them before (at ``(B, H) = (64,
    256)`` a step's arrays and panels filled the 2 MiB L2): float32 LSTM inference, one thread,
    old and new alternating, 0.96 of the time at ``(B, I, H) = (64, 64, 256)``, 0.99 at
    ``(128, 128, 512)``, 1.02 at ``(32, 32, 128)`` (bitwise the same). In training that block
    was copied to the tape; into the tape directly, training took 0.93-1.02 of the time from
    ``(32, 32, 128)`` to ``(128, 128, 512)`` over two A/B runs (float32 and float64, warm and
    after a 64 MB pass over other data) and 0.93-1.04 at ``(1, 8, 32)`` to ``(16, 32, 64)``:
    no slower, one copy and one branch fewer, and training and inference take one path (tried
    before the biases moved into this function: 1.02-1.05 at ``(128, 128, 512)``).
    Each activation runs as its own simple loop over a contiguous row, reading and writing the
    same index of one array, which LLVM vectorises; no output may share memory with another
    array (LLVM then keeps the loops scalar). Every loop runs over views from index 0 (an index
    like ``2 * H + j`` makes Numba test for negative indices, and that test keeps the loop
    scalar: 35 % slower in float32)."""
    wide_vectors()
    H = c.shape[0]
    i, f, g, o = gate_blocks(gates, H)
    _, _, b_g, b_o = gate_blocks(bias, H)
    i_f = gates[:2 * H]
    b_if = bias[:2 * H]
    for j in range(2 * H):
        i_f[j] = sigmoid(i_f[j] + b_if[j])
    for j in range(H):
        g[j] = tanh(g[j] + b_g[j])
    for j in range(H):
        o[j] = sigmoid(o[j] + b_o[j])
    for j in range(H):
        c[j] = f[j] * c_prev[j] + i[j] * g[j]
    for j in range(H):
        tanh_c[j] = tanh(c[j])
    for j in range(H):
        m[j] = o[j] * tanh_c[j]


@jit_borrowing
def gate_blocks(v, H):
    """The four ``(H,)`` blocks ``i, f, g, o`` of a ``(4H,)`` row, as views. Uncounted views:
    only for callers compiled without reference counting too (:data:`~._jit.jit_borrowing`)."""
    return v[:H], v[H:2 * H], v[2 * H:3 * H], v[3 * H:4 * H]


@jit_borrowing
def lstm_cell_backward(dm, dc, gates, c_prev, tanh_c, t, lengths, da, dc_t):
    """Backward of :func:`lstm_cell` for one step.

    ``dm (B, H)`` gradient reaching ``m_t``; ``dc (B, H)`` gradient carried into ``c_t``, replaced
    in place by the gradient carried into ``c_{t-1}``. Writes ``da (B, 4H)`` (pre-activation
    gradients) and ``dc_t (B, H)`` (total gradient of ``c_t``, kept for study).
    """
    wide_vectors()
    B, H = dc.shape
    for b in range(B):
        if t >= lengths[b]:
            copy_into(dc_t[b], dc[b])
            da[b, :] = 0.0
            continue
        i, f, g, o = gate_blocks(gates[b], H)
        da_i, da_f, da_g, da_o = gate_blocks(da[b], H)
        tc = tanh_c[b]
        dm_b = dm[b]
        dc_b = dc[b]
        cp = c_prev[b]
        dct = dc_t[b]
        # one simple loop per output block, over views from index 0: each vectorises
        for j in range(H):
            dct[j] = dc_b[j] + dm_b[j] * o[j] * (1.0 - tc[j] * tc[j])
        for j in range(H):
            da_i[j] = dct[j] * g[j] * i[j] * (1.0 - i[j])
        for j in range(H):
            da_f[j] = dct[j] * cp[j] * f[j] * (1.0 - f[j])
        for j in range(H):
            da_g[j] = dct[j] * i[j] * (1.0 - g[j] * g[j])
        for j in range(H):
            da_o[j] = dm_b[j] * tc[j] * o[j] * (1.0 - o[j])
        for j in range(H):
            dc_b[j] = dct[j] * f[j]


@jit
def lstm_forward(x, w_ih, w_hh, w_t, xw, b_ih, b_hh, w_hr_t, has_proj, lengths, reverse,
                 zero_init, gates, h_seq, c_seq, tanh_c, a, m, xh, blas, b0, b1):
    """Run one direction of one layer over all ``T`` steps, for the rows ``b0 .. b1 - 1`` of
    the batch (rows never meet, so blocks of rows may run in parallel threads).

    In: ``x (T, B, I)``, ``w_ih (4H, I)``, ``w_hh (4H, P)`` (packed into panels for the tiles
    as they are), ``w_t (I + P, 4H)`` = ``[W_ih^T; W_hh^T]`` (the two transposes one above the
    other: what the BLAS reads; unread on the tiles, where it may be ``(0, 4H)``);
    ``xw (T, B, 4H)`` = ``x W_ih^T`` made beforehand by one big product where
    :func:`~._blas.projects_input_first` says so (on the BLAS, at ``I > P`` or ``I + P > 384``;
    the ``W_ih^T`` rows unread), else ``(T, B, 0)``: each step makes its whole pre-activation
    (:func:`~._blas.step_product`: ``x W_ih^T`` never goes through memory); ``b_ih, b_hh
    (4H,)``, summed here once (the caller's one NumPy call fewer); ``w_hr_t (H, P)`` =
    ``W_hr^T`` (ignored unless ``has_proj``); ``lengths (B,)`` int64;
    ``h_seq[init]`` and ``c_seq[init]`` hold the initial state, ``init = T if reverse else 0``,
    unless ``zero_init``: then the loop zeroes them first (its block's rows).
    Out: ``gates (T, B, 4H)``, ``h_seq (T + 1, B, P)``, ``c_seq (T + 1, B, H)``,
    ``tanh_c (T, B, H)``. ``gates`` may be ``xw`` itself (step ``t`` reads ``xw[t]`` before it
    writes ``gates[t]``), which saves a ``(T, B, 4H)`` buffer. :func:`lstm_cell` activates the
    gates in place: each step's products write the pre-activations straight into
    ``gates[t]`` (in inference its one scratch row). Scratch for the block: ``a (b1 - b0, 4H)``
    where ``x W_ih^T`` was made first (the step's recurrent product goes there, and the cell
    adds ``xw[t]``; else unread, and it may be ``(b1 - b0, 0)``), ``m (b1 - b0, H)``,
    ``xh (b1 - b0, I + P)``. ``blas``: each step's
    products by the BLAS, else by register tiles (:func:`~._blas.product`).

    To keep no record of the steps (inference), ``gates (1, B, 4H)`` and ``tanh_c (1, B, H)``
    are one step's scratch that stays in cache, and ``c_seq`` is ``(2, B, H)``: every array is
    indexed modulo its length (as :func:`~.gru.gru_forward` does), so the steps alternate
    between the two halves of ``c_seq`` (no loop reads and writes the same memory), the initial
    ``c`` sits in ``c_seq[init % 2]`` and the final one ends in ``c_seq[(T - init) % 2]``. The
    arithmetic is the same, so the outputs are bitwise those of the full arrays.
    """
    P = w_hh.shape[1]
    if zero_init:
        zero_initial(h_seq, x.shape[0], reverse, b0, b1)
        zero_initial(c_seq, x.shape[0], reverse, b0, b1)
    _lstm_forward_steps(x, w_t, xw, b_ih + b_hh, w_hr_t, has_proj, lengths, reverse, gates, h_seq,
                        c_seq, tanh_c, a, m, xh, blas, b0, b1,
                        prepare_step(w_ih, w_hh, w_t, blas),
                        prepare(w_hr_t, 0, m.shape[1], 0, P, blas or not has_proj))


@jit_borrowing
def _lstm_forward_steps(x, w_t, xw, bias, w_hr_t, has_proj, lengths, reverse, gates, h_seq,
                        c_seq, tanh_c, a, m, xh, blas, b0, b1, step, hr):
    """The time loop of :func:`lstm_forward` over its packed weights ``step, hr``; compiled without
    reference counting (:data:`~._jit.jit_borrowing`): the step's views of the arrays cost
    nothing."""
    T = x.shape[0]
    lens = lengths[b0:b1]
    P = h_seq.shape[2]
    for s in range(T):
        t, p, q = step_indices(s, T, reverse)
        # the rows of the record, or of one step's scratch (inference): modulo their length
        r, cp, cq = t % gates.shape[0], p % c_seq.shape[0], q % c_seq.shape[0]
        h_prev = h_seq[p, b0:b1]
        h_next = h_seq[q, b0:b1]
        g = gates[r, b0:b1]
        # the products write the pre-activations into the gates' row (a scratch in inference,
        # the tape's row in training), where the cell activates them in place; h W_hh^T alone
        # (x W_ih^T made first, ``gates`` may be ``xw``) goes to ``a``, which the cell sums
        pre = g if not step[1] else a
        step_product(x[t, b0:b1], h_prev, w_t, step, xh, pre, blas)
        out = m if has_proj else h_next
        lstm_cell(g, xw[t, b0:b1], bias, pre, c_seq[cp, b0:b1], t, lens,
                  c_seq[cq, b0:b1], tanh_c[r, b0:b1], out)
        if has_proj:
            product(m, w_hr_t, hr, h_next, 0, m.shape[1], 0, P, False, blas)
        carry_past_end(t, lens, h_prev, h_next)


def lstm_forward_blas(x, w_ih, w_hh, w_t, xw, b_ih, b_hh, w_hr_t, has_proj, lengths, reverse,
                      zero_init, gates, h_seq, c_seq, tanh_c, a, m, xh, blas, b0, b1):
    """:func:`lstm_forward` stepped in Python, with the per-step products in NumPy's BLAS: the
    fallback where the compiled loop cannot call NumPy's BLAS itself (``_blas.FOUND`` is
    False). Same arguments (``blas`` and ``xh`` ignored), same results up to summation order;
    the gate math is the same ``@njit`` :func:`lstm_cell`."""
    xw, x, gates, h_seq, c_seq, tanh_c = (v[:, b0:b1]
                                          for v in (xw, x, gates, h_seq, c_seq, tanh_c))
    lengths, bias = lengths[b0:b1], b_ih + b_hh
    T = x.shape[0]
    if zero_init:
        zero_initial_numpy(h_seq, T, reverse)
        zero_initial_numpy(c_seq, T, reverse)
    summed = xw.shape[2] == 0                 # the layer made no x W_ih^T: the step makes it
    partial = bool((lengths < T).any())       # else carry_past_end has nothing to do
    for s in range(T):
        t, p, q = (T - 1 - s, T - s, T - 1 - s) if reverse else (s, s, s + 1)
        r, cp, cq = t % gates.shape[0], p % c_seq.shape[0], q % c_seq.shape[0]
        pre = gates[r] if summed else a       # the whole pre-activation goes into the gates
        step_product_numpy(x[t], h_seq[p], w_t, pre, summed)
        out = m if has_proj else h_seq[q]
        lstm_cell(gates[r], xw[t], bias, pre, c_seq[cp], t, lengths, c_seq[cq],
                  tanh_c[r], out)
        if has_proj:
            np.matmul(m, w_hr_t, out=h_seq[q])
        if partial:
            carry_past_end(t, lengths, h_seq[p], h_seq[q])


@jit
def lstm_backward(dy, gates, c_seq, tanh_c, w_ih, w_hh, w_hr, has_proj, lengths, reverse,
                  dh, dc, da, dh_steps, dc_steps, dx, dm, blas, b0, b1):
    """BPTT for one direction of one layer, for the rows ``b0 .. b1 - 1`` of the batch.

    In: ``dy (T, B, P)`` gradient of the outputs (zero past each length); tape arrays as written
    by :func:`lstm_forward`; ``w_ih (4H, I)``, ``w_hh (4H, P)``; ``w_hr (P, H)`` (ignored
    unless ``has_proj``).
    In/out: ``dh (B, P)`` and ``dc (B, H)`` enter as the gradients of the final state and leave as
    the gradients of the initial state.
    Out: ``da (T, B, 4H)`` pre-activation gradients, ``dh_steps (T, B, P)`` total ``dL/dh_t``,
    ``dc_steps (T, B, H)`` total ``dL/dc_t``, ``dx (T, B, I)`` = ``da W_ih``, made step by step
    while ``da_t`` is in cache (before, one product over all ``T * B`` rows after the loop, which
    read ``da`` back from memory: float32 training steps 0.95-0.99 of the time on one thread,
    three cells, (8, 16, 64) to (128, 128, 512); 0.96-1.04 right after a 64 MB pass over other
    data, float32 and float64 (over 1.0: small RNN rows and the float64 GRU at (8, 16, 64));
    0.99-1.00 on two threads). Scratch:
    ``dm (b1 - b0, H)``. ``blas`` as in :func:`lstm_forward`.
    """
    G, P = w_hh.shape
    _lstm_backward_steps(dy, gates, c_seq, tanh_c, w_ih, w_hh, w_hr, has_proj, lengths, reverse,
                         dh, dc, da, dh_steps, dc_steps, dx, dm, blas, b0, b1,
                         prepare(w_hh, 0, G, 0, P, blas),
                         prepare(w_ih, 0, G, 0, w_ih.shape[1], blas),
                         prepare(w_hr, 0, P, 0, dm.shape[1], blas or not has_proj))


@jit_borrowing
def _lstm_backward_steps(dy, gates, c_seq, tanh_c, w_ih, w_hh, w_hr, has_proj, lengths, reverse,
                         dh, dc, da, dh_steps, dc_steps, dx, dm, blas, b0, b1, hh, ih, hr):
    """The time loop of :func:`lstm_backward` over its packed weights ``hh, ih, hr``; compiled
    without reference counting (:data:`~._jit.jit_borrowing`): the step's views of the arrays
    cost nothing."""
    T = dy.shape[0]
    lens = lengths[b0:b1]
    G, P = w_hh.shape
    dh_b = dh[b0:b1]
    dc_b = dc[b0:b1]
    for s in range(T):
        t, p, q = step_indices(T - 1 - s, T, reverse)
        dh_t = dh_steps[t, b0:b1]
        da_t = da[t, b0:b1]
        add_into(dh_t, dh_b, dy[t, b0:b1])
        if has_proj:
            product(dh_t, w_hr, hr, dm, 0, P, 0, dm.shape[1], False, blas)
            lstm_cell_backward(dm, dc_b, gates[t, b0:b1], c_seq[p, b0:b1], tanh_c[t, b0:b1], t,
                               lens, da_t, dc_steps[t, b0:b1])
        else:
            lstm_cell_backward(dh_t, dc_b, gates[t, b0:b1], c_seq[p, b0:b1], tanh_c[t, b0:b1],
                               t, lens, da_t, dc_steps[t, b0:b1])
        product(da_t, w_hh, hh, dh_b, 0, G, 0, P, False, blas)
        product(da_t, w_ih, ih, dx[t, b0:b1], 0, G, 0, w_ih.shape[1], False, blas)
        carry_past_end(t, lens, dh_t, dh_b)


def lstm_backward_blas(dy, gates, c_seq, tanh_c, w_ih, w_hh, w_hr, has_proj, lengths, reverse,
                       dh, dc, da, dh_steps, dc_steps, dx, dm, blas, b0, b1):
    """:func:`lstm_backward` stepped in Python with NumPy's BLAS (the fallback of
    :func:`lstm_forward_blas`); same arguments."""
    dy, gates, c_seq, tanh_c, da, dh_steps, dc_steps, dx = (
        v[:, b0:b1] for v in (dy, gates, c_seq, tanh_c, da, dh_steps, dc_steps, dx))
    dh, dc, lengths = dh[b0:b1], dc[b0:b1], lengths[b0:b1]
    T = dy.shape[0]
    partial = bool((lengths < T).any())       # else carry_past_end has nothing to do
    for s in range(T):
        t, p = (s, s + 1) if reverse else (T - 1 - s, T - 1 - s)
        dh_t = dh_steps[t]
        np.add(dh, dy[t], out=dh_t)
        if has_proj:
            np.matmul(dh_t, w_hr, out=dm)
        lstm_cell_backward(dm if has_proj else dh_t, dc, gates[t], c_seq[p], tanh_c[t], t,
                           lengths, da[t], dc_steps[t])
        np.matmul(da[t], w_hh, out=dh)
        np.matmul(da[t], w_ih, out=dx[t])
        if partial:
            carry_past_end(t, lengths, dh_t, dh)


@jit
def lstm_step(x, w_ih_t, w_hh_t, bias, w_hr_t, has_proj, h, c, work):
    """One streaming step for ``B`` rows, in place: ``x (B, I)`` and the state ``h (B, P)``,
    ``c (B, H)`` are replaced by the next state. ``w_ih_t (I, 4H)``, ``w_hh_t (P, 4H)``,
    ``bias (4H,)`` = ``b_ih + b_hh`` (zeros without bias), ``w_hr_t (H, P)``; ``work`` 1-D
    scratch of at least ``B * 7H`` entries.

    The products go into one buffer (no separate input product), which the gate math
    activates in place, adding the bias; the new state goes to scratch and is copied back, so
    no loop reads and writes the same memory through two names.
    """
    B, H = c.shape
    P = h.shape[1]
    gates, end = take_block(work, 0, B, 4 * H)
    c_next, end = take_block(work, end, B, H)
    tanh_c, end = take_block(work, end, B, H)
    m, _ = take_block(work, end, B, H)
    matmul_into(x, w_ih_t, gates, 0, x.shape[1], 0, 4 * H, False)
    matmul_add(h, w_hh_t, gates, 0, P, 0, 4 * H)
    for b in range(B):
        lstm_cell_row(gates[b], bias, c[b], c_next[b], tanh_c[b], m[b])
        copy_into(c[b], c_next[b])
    if has_proj:
        matmul_into(m, w_hr_t, h, 0, H, 0, P, False)
    else:
        for b in range(B):
            copy_into(h[b], m[b])


@jit
def lstm_stream(x_flat, buffer, meta):
    """One streaming step of a stack of ``L`` unidirectional LSTM layers, in place, in one call.

    ``buffer`` and ``meta`` as :func:`stream_layout` reads them, with the flags ``P, has_proj``
    (the ``B`` ones unused here). ``pack``: per layer ``w_ih_t (I_l, 4H)``, ``w_hh_t (P, 4H)``,
    ``bias (4H,)``, and ``w_hr_t (H, P)`` with projection, raveled and concatenated. ``state``:
    per layer ``h (B, P)`` then ``c (B, H)``, raveled and concatenated. ``work``: scratch of
    ``B * 7H``.
    ``x_flat`` is the input ``(B, I_0)`` raveled. Returns False, changing nothing, when it has a
    NaN or Inf.
    """
    L, B, H, flags, sizes, _, x, pack, state, work = stream_layout(x_flat, buffer, meta, 2)
    if not all_finite(x_flat):
        return False
    P = flags[0]
    has_proj = flags[1] != 0
    off = 0
    soff = 0
    inp = x
    for k in range(L):
        w_ih_t, off = take_block(pack, off, sizes[k], 4 * H)
        w_hh_t, off = take_block(pack, off, P, 4 * H)
        bias_2d, off = take_block(pack, off, 1, 4 * H)
        if has_proj:
            w_hr_t, off = take_block(pack, off, H, P)
        else:
            w_hr_t = bias_2d                             # unused
        h, soff = take_block(state, soff, B, P)
        c, soff = take_block(state, soff, B, H)
        lstm_step(inp, w_ih_t, w_hh_t, bias_2d[0], w_hr_t, has_proj, h, c, work)
        inp = h
    return True

