r"""GRU kernels: forward over T steps, backward (BPTT) over T steps, one streaming step.

Shapes: ``T`` steps, ``B`` batch, ``H`` hidden. Time-major, C-contiguous, one dtype.
Gate order ``r, z, n`` as in ``torch.nn.GRU``. ``xw = x W_ih^T``: made by each step into its row
of the gates on the register tiles, or for all steps before the loop where the steps use the BLAS
(:func:`gru_forward`); the kernels add ``b_ih`` where they read it (one pass over memory fewer),
written below as part of xw,
and ``b_hh`` to the step's product ``h_{t-1} W_hh^T`` where they read that (the product stores
into its scratch, with no pass to put the bias in first), written below as part of hw.

Forward, ``reset_after=True`` (torch; ONNX ``linear_before_reset=1``; Keras default)::

    hw  = h_{t-1} W_hh^T + b_hh                     (B, 3H)
    r   = sigmoid(xw_r + hw_r)
    z   = sigmoid(xw_z + hw_z)
    n   = tanh(xw_n + r * hw_n)                     kept: hn = hw_n
    h_t = (1 - z) * n + z * h_{t-1}

``reset_after=False`` (Keras ``reset_after=False``, ONNX ``linear_before_reset=0``)::

    n   = tanh(xw_n + (r * h_{t-1}) W_hn^T + b_hn)  kept: hn = r * h_{t-1}

Backward, ``dh_t`` the total gradient reaching ``h_t``::

    dz_pre = dh_t * (h_{t-1} - n) * z (1 - z)
    dn_pre = dh_t * (1 - z) * (1 - n^2)
    reset_after=True:   dr_pre = dn_pre * hw_n * r (1 - r);   dhw_n = dn_pre * r
                        dh_{t-1} = dh_t * z + dhw W_hh        (dhw = [dr_pre, dz_pre, dhw_n])
    reset_after=False:  d(rh)  = dn_pre W_hn;   dr_pre = d(rh) * h_{t-1} * r (1 - r)
                        dh_{t-1} = dh_t * z + [dr_pre, dz_pre] W_h{r,z} + d(rh) * r
    dxw = [dr_pre, dz_pre, dn_pre]

In the loop, while ``dxw_t`` is in cache: ``dx_t = dxw_t W_ih``. After the loop (caller, one
product over all ``T * B`` rows): ``dW_ih = dxw^T x``, ``db_ih = sum dxw``, ``db_hh = sum dhw``,
``dW_hh = dhw^T h_{prev}`` (for ``reset_after=False`` the ``n`` block is
``dhw_n^T (r * h_{prev})``).
Rows past their length (``t >= lengths[b]``) carry their state and pass gradients through.
"""
import numpy as np

from ._activations import sigmoid, tanh
from ._blas import prepare, prepare_from_weights, product
from ._blocks import (add_into, all_finite, copy_into, matmul_into, step_indices,
                      stream_layout, take_block, zero_initial, zero_initial_numpy)
from ._jit import jit, jit_borrowing, wide_vectors
from ._tiles import panel_matmul


@jit_borrowing
def gru_gates_rz(xw, b_ih, b_hh, hw, h_prev, reset_after, t, lengths, gates, hn):
    """First half of a step: ``r``, ``z`` into ``gates[:, :2H]`` and ``hn`` (``hw_n`` if
    ``reset_after`` else ``r * h_prev``). ``hw (B, 3H)`` holds ``h_prev W_hh^T`` without the
    bias (for ``reset_after=False`` only its ``r, z`` blocks), to which ``b_hh (3H,)`` is added
    here: its ``r, z`` blocks are overwritten with the pre-activations and (``reset_after``)
    its ``n`` block with ``hw_n``. ``gates`` may be ``xw``."""
    wide_vectors()
    B, H = h_prev.shape
    for b in range(B):
        g_b = gates[b]
        hn_b = hn[b]
        if t >= lengths[b]:
            g_b[:2 * H] = 0.0
            hn_b[:] = 0.0
            continue
        x_b = xw[b]
        hw_b = hw[b]
        for j in range(2 * H):        # into the scratch: gates may share memory with xw
            hw_b[j] = (hw_b[j] + b_hh[j]) + (x_b[j] + b_ih[j])
        for j in range(2 * H):
            g_b[j] = sigmoid(hw_b[j])
        if reset_after:
            hw_n = hw_b[2 * H:]
            b_hn = b_hh[2 * H:]
            for j in range(H):            # one pass: the bias in, and hn kept
                v = hw_n[j] + b_hn[j]
                hw_n[j] = v
                hn_b[j] = v
        else:
            hp_b = h_prev[b]
            for j in range(H):
                hn_b[j] = g_b[j] * hp_b[j]


@jit_borrowing
def gru_candidate(xw, b_ih, b_hh, hw, h_prev, reset_after, t, lengths, gates, h):
    """Second half of a step: ``n`` into ``gates[:, 2H:]`` and the new state ``h``. For
    ``reset_after=False``, ``hw[:, 2H:]`` must by now hold ``(r * h_prev) W_hn^T``, to which
    ``b_hn`` is added here.
    Rows past their length carry ``h_prev``. Loops run over views from index 0 (see
    :func:`~lstm_np.kernels.lstm.lstm_cell_row`)."""
    wide_vectors()
    B, H = h.shape
    b_n = b_ih[2 * H:]
    b_hn = b_hh[2 * H:]
    for b in range(B):
        r, z, n = gate_blocks(gates[b], H)
        h_b = h[b]
        hp_b = h_prev[b]
        if t >= lengths[b]:
            n[:] = 0.0
            copy_into(h_b, hp_b)
            continue
        x_n = xw[b, 2 * H:]
        hw_n = hw[b, 2 * H:]
        if reset_after:
            for j in range(H):
                hw_n[j] = x_n[j] + b_n[j] + r[j] * hw_n[j]
        else:
            for j in range(H):
                hw_n[j] = (hw_n[j] + b_hn[j]) + (x_n[j] + b_n[j])
        for j in range(H):
            n[j] = tanh(hw_n[j])
        for j in range(H):
            h_b[j] = (1.0 - z[j]) * n[j] + z[j] * hp_b[j]


@jit_borrowing
def gate_blocks(v, H):
    """The three ``(H,)`` blocks ``r, z, n`` of a ``(3H,)`` row, as views. Uncounted views:
    only for callers compiled without reference counting too (:data:`~._jit.jit_borrowing`)."""
    return v[:H], v[H:2 * H], v[2 * H:3 * H]


@jit
def gru_forward(x, w_ih, xw, b_ih, w_hh, w_hh_t, b_hh, reset_after, lengths, reverse, zero_init,
                gates, h_seq, hn, hw, blas, b0, b1):
    """Run one direction of one layer over all ``T`` steps, for the rows ``b0 .. b1 - 1`` of the
    batch (blocks of rows may run in parallel threads).

    In: ``x (T, B, I)``, ``w_ih (3H, I)`` (packed for the tiles as it is); ``xw (T, B, 3H)`` =
    ``x W_ih^T`` made beforehand (where the steps use the BLAS: one big product over all ``T *
    B`` rows), or ``(T, B, 0)``: then each step makes its ``x_t W_ih^T`` on the tiles into its
    row of ``gates``, where the gate math reads it and writes the gates over it (as when
    ``gates`` is ``xw``), so the ``(T, B, 3H)`` product never goes through memory on its own;
    ``b_ih (3H,)``; ``w_hh (3H, H)`` (packed for the tiles as it is); ``w_hh_t (H, 3H)`` =
    ``W_hh^T`` (what the BLAS reads; unread on the tiles, where it may be ``(0, 3H)``);
    ``b_hh (3H,)`` (biases are zeros without bias);
    ``h_seq[init]`` holds the initial state (``init = T if reverse else 0``), or is zeroed
    here first if ``zero_init``.
    Out: ``gates (T, B, 3H)``, ``h_seq (T + 1, B, H)``, ``hn (T, B, H)``; or, to keep no record
    of the steps (inference), ``gates (1, B, 3H)`` and ``hn (1, B, H)``, one step's scratch that
    every step reuses (step ``t`` uses row ``t`` modulo their length; the arithmetic is the
    same, so the outputs are bitwise those of the full ones). Scratch ``hw (b1 - b0, 3H)``: each
    step's ``h_{t-1} W_hh^T``, stored there by the product (the biases are added where it is
    read). ``gates`` may be ``xw`` itself: every gate entry is written after its ``xw`` entry
    is read. ``blas``: each step's products by the BLAS (:func:`product`).

    Made in the step, ``x_t W_ih^T`` is bitwise what the product over all rows gives (the
    tiles' sums do not depend on the rows, :mod:`~._tiles`), and its block of ``(B, 3H)`` is
    read by the gate math from the L1 instead of from a ``(T, B, 3H)`` array written before
    the loop (1.2 MiB at ``(B, I, H) = (8, 16, 64)`` in float64, 19 MiB at ``(64, 64, 256)`` in
    float32). Against that product made first, old and new alternating call by call, one
    thread, each call after a torch call: inference 0.88 of the time at ``(8, 16, 64)``
    (float64; float32 0.94), 0.77 at ``(32, 32, 128)`` (float64), 0.88 at ``(64, 64, 256)`` and
    0.91 at ``(128, 128, 512)`` (float32); training 0.96 (float64 at ``(8, 16, 64)``, float32 at
    ``(64, 64, 256)``) and 0.97 (float32 at ``(128, 128, 512)``); two threads, inference
    0.86-0.96 and training 0.93-0.96. Bitwise the same results throughout.
    """
    H = w_hh.shape[1]
    if zero_init:
        zero_initial(h_seq, x.shape[0], reverse, b0, b1)
    in_step = xw.shape[2] == 0
    _gru_forward_steps(x, xw, b_ih, w_hh_t, b_hh, reset_after, lengths, reverse, gates, h_seq,
                       hn, hw, blas, b0, b1,
                       prepare_from_weights(w_ih, w_ih[:, :0], 0, 3 * H, blas or not in_step),
                       prepare_from_weights(w_hh, w_hh[:, :0], 0,
                                            3 * H if reset_after else 2 * H, blas),
                       prepare_from_weights(w_hh, w_hh[:, :0], 2 * H, 3 * H,
                                            blas or reset_after))


@jit_borrowing
def _gru_forward_steps(x, xw, b_ih, w_hh_t, b_hh, reset_after, lengths, reverse, gates, h_seq,
                       hn, hw, blas, b0, b1, ih, rz, nn):
    """The time loop of :func:`gru_forward` over its packed weights ``ih, rz, nn``; compiled
    without reference counting (:data:`~._jit.jit_borrowing`): the step's views of the arrays
    cost nothing."""
    T, H = x.shape[0], h_seq.shape[2]
    rz_end = 3 * H if reset_after else 2 * H
    in_step = xw.shape[2] == 0
    lens = lengths[b0:b1]
    for s in range(T):
        t, p, q = step_indices(s, T, reverse)
        h_prev = h_seq[p, b0:b1]
        g_t = gates[t % gates.shape[0], b0:b1]          # (1, B, 3H) in inference: one scratch row
        hn_t = hn[t % hn.shape[0], b0:b1]
        if in_step:
            panel_matmul(x[t, b0:b1], 0, ih, g_t, 0, 3 * H, False)
            x_t = g_t
        else:
            x_t = xw[t, b0:b1]
        product(h_prev, w_hh_t, rz, hw, 0, H, 0, rz_end, False, blas)
        gru_gates_rz(x_t, b_ih, b_hh, hw, h_prev, reset_after, t, lens, g_t, hn_t)
        if not reset_after:
            product(hn_t, w_hh_t, nn, hw, 0, H, 2 * H, 3 * H, False, blas)
        gru_candidate(x_t, b_ih, b_hh, hw, h_prev, reset_after, t, lens, g_t, h_seq[q, b0:b1])


def gru_forward_blas(x, w_ih, xw, b_ih, w_hh, w_hh_t, b_hh, reset_after, lengths, reverse,
                     zero_init, gates, h_seq, hn, hw, blas, b0, b1):
    """:func:`gru_forward` stepped in Python with NumPy's BLAS: the fallback where the compiled
    loop cannot call NumPy's BLAS itself. Same arguments (``blas``, ``x`` and ``w_ih`` ignored:
    ``xw`` is made beforehand on the BLAS), same results up to summation order."""
    xw, gates, h_seq, hn = (v[:, b0:b1] for v in (xw, gates, h_seq, hn))
    lengths = lengths[b0:b1]
    T, B, G = xw.shape
    if zero_init:
        zero_initial_numpy(h_seq, T, reverse)
    H = G // 3
    w_rec = w_hh_t if reset_after else w_hh_t[:, :2 * H]
    w_n = w_hh_t[:, 2 * H:]
    for s in range(T):
        t, p, q = (T - 1 - s, T - s, T - 1 - s) if reverse else (s, s, s + 1)
        g_t, hn_t = gates[t % gates.shape[0]], hn[t % hn.shape[0]]
        hw[:, :w_rec.shape[1]] = h_seq[p] @ w_rec
        gru_gates_rz(xw[t], b_ih, b_hh, hw, h_seq[p], reset_after, t, lengths, g_t, hn_t)
        if not reset_after:
            hw[:, 2 * H:] = hn_t @ w_n
        gru_candidate(xw[t], b_ih, b_hh, hw, h_seq[p], reset_after, t, lengths, g_t, h_seq[q])


@jit_borrowing
def gru_cell_backward(dh_t, gates, h_prev, hn, reset_after, t, lengths, gx, gh):
    """Per-row backward of one step, all but the ``r`` gate of ``reset_after=False`` (which needs
    ``d(rh)`` first, see :func:`gru_reset_backward`). Writes ``gx`` (gradient of ``xw``) and ``gh``
    (gradient of ``hw``), both ``(B, 3H)``."""
    wide_vectors()
    B, H = dh_t.shape
    for b in range(B):
        if t >= lengths[b]:
            gx[b, :] = 0.0
            gh[b, :] = 0.0
            continue
        r, z, n = gate_blocks(gates[b], H)
        gx_r, gx_z, gx_n = gate_blocks(gx[b], H)
        gh_r, gh_z, gh_n = gate_blocks(gh[b], H)
        d = dh_t[b]
        hp = h_prev[b]
        # one output per loop, over views from index 0: each loop vectorises
        for j in range(H):
            gx_z[j] = d[j] * (hp[j] - n[j]) * z[j] * (1.0 - z[j])
        copy_into(gh_z, gx_z)
        for j in range(H):
            gx_n[j] = d[j] * (1.0 - z[j]) * (1.0 - n[j] * n[j])
        if reset_after:
            hn_b = hn[b]
            for j in range(H):                               # r
                gx_r[j] = gx_n[j] * hn_b[j] * r[j] * (1.0 - r[j])
            copy_into(gh_r, gx_r)
            for j in range(H):                               # the n block of hw
                gh_n[j] = gx_n[j] * r[j]
        else:
            copy_into(gh_n, gx_n)


@jit_borrowing
def gru_reset_backward(dh_t, drh, gates, h_prev, reset_after, t, lengths, gx, gh, dh):
    """Finish a step's backward: for ``reset_after=False`` the ``r`` gate from
    ``drh = dn_pre W_hn``; for both forms the direct part of the carried gradient,
    ``dh = dh_t * z (+ drh * r)`` (the caller adds ``gh W_hh``); rows past their length pass
    ``dh_t`` through."""
    wide_vectors()
    B, H = dh_t.shape
    for b in range(B):
        if t >= lengths[b]:
            copy_into(dh[b], dh_t[b])
            continue
        r, z, _ = gate_blocks(gates[b], H)
        d = dh_t[b]
        dh_b = dh[b]
        if reset_after:
            for j in range(H):
                dh_b[j] = d[j] * z[j]
            continue
        drh_b = drh[b]
        hp = h_prev[b]
        gx_r = gx[b, :H]
        gh_r = gh[b, :H]
        for j in range(H):          # one output per loop: few enough overlap checks to vectorise
            gx_r[j] = drh_b[j] * hp[j] * r[j] * (1.0 - r[j])
        copy_into(gh_r, gx_r)
        for j in range(H):
            dh_b[j] = d[j] * z[j] + drh_b[j] * r[j]


@jit
def gru_backward(dy, gates, h_seq, hn, w_ih, w_hh, reset_after, lengths, reverse,
                 dh, dxw, dhw, dh_steps, dx, drh, blas, b0, b1):
    """BPTT for one direction of one layer, for the rows ``b0 .. b1 - 1`` of the batch.

    In: ``dy (T, B, H)`` (zero past each length); tape arrays from :func:`gru_forward`;
    ``w_ih (3H, I)``, ``w_hh (3H, H)``. In/out: ``dh (B, H)``: gradient of the final state in,
    of the initial state out. Out: ``dxw``, ``dhw (T, B, 3H)`` (gradients of ``xw`` and of
    ``hw``, see module docstring), ``dh_steps (T, B, H)`` total ``dL/dh_t``, ``dx (T, B, I)`` =
    ``dxw W_ih``, made step by step while ``dxw_t`` is in cache. Scratch ``drh (b1 - b0, H)``.
    """
    H = dy.shape[2]
    _gru_backward_steps(dy, gates, h_seq, hn, w_ih, w_hh, reset_after, lengths, reverse, dh, dxw,
                        dhw, dh_steps, dx, drh, blas, b0, b1,
                        prepare(w_hh, 0, 3 * H if reset_after else 2 * H, 0, H, blas),
                        prepare(w_hh, 2 * H, 3 * H, 0, H, blas or reset_after),
                        prepare(w_ih, 0, 3 * H, 0, w_ih.shape[1], blas))


@jit_borrowing
def _gru_backward_steps(dy, gates, h_seq, hn, w_ih, w_hh, reset_after, lengths, reverse, dh, dxw,
                        dhw, dh_steps, dx, drh, blas, b0, b1, rz, nn, ih):
    """The time loop of :func:`gru_backward` over its packed weights ``rz, nn, ih``; compiled
    without reference counting (:data:`~._jit.jit_borrowing`): the step's views of the arrays
    cost nothing."""
    T, B, H = dy.shape
    rz_end = 3 * H if reset_after else 2 * H
    lens = lengths[b0:b1]
    dh_b = dh[b0:b1]
    for s in range(T):
        t, p, q = step_indices(T - 1 - s, T, reverse)
        dh_t = dh_steps[t, b0:b1]
        g_t = gates[t, b0:b1]
        h_prev = h_seq[p, b0:b1]
        dxw_t = dxw[t, b0:b1]
        dhw_t = dhw[t, b0:b1]
        add_into(dh_t, dh_b, dy[t, b0:b1])
        gru_cell_backward(dh_t, g_t, h_prev, hn[t, b0:b1], reset_after, t, lens, dxw_t, dhw_t)
        if not reset_after:
            product(dhw_t, w_hh, nn, drh, 2 * H, 3 * H, 0, H, False, blas)
        gru_reset_backward(dh_t, drh, g_t, h_prev, reset_after, t, lens, dxw_t, dhw_t, dh_b)
        product(dhw_t, w_hh, rz, dh_b, 0, rz_end, 0, H, True, blas)
        product(dxw_t, w_ih, ih, dx[t, b0:b1], 0, 3 * H, 0, w_ih.shape[1], False, blas)


def gru_backward_blas(dy, gates, h_seq, hn, w_ih, w_hh, reset_after, lengths, reverse,
                      dh, dxw, dhw, dh_steps, dx, drh, blas, b0, b1):
    """:func:`gru_backward` stepped in Python with NumPy's BLAS (the fallback of
    :func:`gru_forward_blas`); same arguments."""
    dy, gates, h_seq, hn, dxw, dhw, dh_steps, dx = (
        v[:, b0:b1] for v in (dy, gates, h_seq, hn, dxw, dhw, dh_steps, dx))
    dh, lengths = dh[b0:b1], lengths[b0:b1]
    T, B, H = dy.shape
    rz_end = 3 * H if reset_after else 2 * H
    w_rec = w_hh[:rz_end]
    w_n = w_hh[2 * H:]
    for s in range(T):
        t, p = (s, s + 1) if reverse else (T - 1 - s, T - 1 - s)
        dh_t = dh_steps[t]
        np.add(dh, dy[t], out=dh_t)
        gru_cell_backward(dh_t, gates[t], h_seq[p], hn[t], reset_after, t, lengths,
                          dxw[t], dhw[t])
        if not reset_after:
            np.matmul(dhw[t][:, 2 * H:], w_n, out=drh)
        gru_reset_backward(dh_t, drh, gates[t], h_seq[p], reset_after, t, lengths,
                           dxw[t], dhw[t], dh)
        dh += dhw[t][:, :rz_end] @ w_rec
        np.matmul(dxw[t], w_ih, out=dx[t])


@jit
def gru_step(x, w_ih_t, w_hh_t, b_ih, b_hh, reset_after, ones, h, work):
    """One streaming step for ``B`` rows, in place: ``h (B, H)`` becomes the next state.
    ``w_ih_t (I, 3H)``, ``w_hh_t (H, 3H)``, ``b_ih``, ``b_hh (3H,)``; ``ones (B,)`` int64 ones;
    ``work`` 1-D scratch of at least ``B * 10H`` entries."""
    B, H = h.shape
    xw, end = take_block(work, 0, B, 3 * H)
    hw, end = take_block(work, end, B, 3 * H)
    gates, end = take_block(work, end, B, 3 * H)
    hn, _ = take_block(work, end, B, H)
    matmul_into(x, w_ih_t, xw, 0, x.shape[1], 0, 3 * H, False)
    matmul_into(h, w_hh_t, hw, 0, H, 0, 3 * H if reset_after else 2 * H, False)
    gru_gates_rz(xw, b_ih, b_hh, hw, h, reset_after, 0, ones, gates, hn)
    if not reset_after:
        matmul_into(hn, w_hh_t, hw, 0, H, 2 * H, 3 * H, False)
    gru_candidate(xw, b_ih, b_hh, hw, h, reset_after, 0, ones, gates, h)   # h read, then written


@jit
def gru_stream(x_flat, buffer, meta):
    """One streaming step of a stack of ``L`` unidirectional GRU layers, in place, in one call.

    ``buffer`` and ``meta`` as :func:`stream_layout` reads them, with the flag ``reset_after``.
    ``pack``: per layer ``w_ih_t (I_l, 3H)``, ``w_hh_t (H, 3H)``, ``b_ih (3H,)``, ``b_hh (3H,)``,
    raveled and concatenated. ``state``: per layer ``h (B, H)``. ``work``: scratch of ``B * 10H``.
    ``x_flat`` is the input ``(B, I_0)`` raveled. Returns False, changing nothing, when it has a
    NaN or Inf.
    """
    L, B, H, flags, sizes, ones, x, pack, state, work = stream_layout(x_flat, buffer, meta, 1)
    if not all_finite(x_flat):
        return False
    reset_after = flags[0] != 0
    off = 0
    inp = x
    for k in range(L):
        w_ih_t, off = take_block(pack, off, sizes[k], 3 * H)
        w_hh_t, off = take_block(pack, off, H, 3 * H)
        biases, off = take_block(pack, off, 2, 3 * H)    # b_ih, b_hh
        h, _ = take_block(state, k * B * H, B, H)
        gru_step(inp, w_ih_t, w_hh_t, biases[0], biases[1], reset_after, ones, h, work)
        inp = h
    return True

