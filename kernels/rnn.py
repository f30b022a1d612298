r"""Vanilla (Elman) RNN kernels: forward over T steps, backward over T steps, one step.

Shapes: ``T`` steps, ``B`` batch, ``H`` hidden; time-major, C-contiguous, one dtype.

Forward, as ``torch.nn.RNN``, with ``phi = tanh`` or ``relu``::

    a_t = x_t W_ih^T + h_{t-1} W_hh^T + (b_ih + b_hh)    (x-part made in the step, or
                                                          precomputed as xw on the BLAS;
                                                          the bias added last, in phi's loop)
    h_t = phi(a_t)

Backward, ``dh_t`` the total gradient reaching ``h_t``::

    da_t     = dh_t * (1 - h_t^2)        (tanh)     or   dh_t * [h_t > 0]   (relu)
    dh_{t-1} = da_t W_hh
    dx_t     = da_t W_ih                 (in the loop, while da_t is in cache)

After the loop (caller): ``dW_ih = da^T x``, ``dW_hh = da^T h_{prev}``,
``db_ih = db_hh = sum da``.
Rows past their length (``t >= lengths[b]``) carry their state and pass gradients through.
"""
import numpy as np

from ._activations import tanh
from ._blas import prepare, prepare_step, product, step_product, step_product_numpy
from ._blocks import (add_into, all_finite, carry_past_end, matmul_into, step_indices,
                      stream_layout, take_block, zero_initial, zero_initial_numpy)
from ._jit import jit, jit_borrowing, wide_vectors


@jit_borrowing
def rnn_cell(a, xw, bias, summed, relu, t, lengths, h):
    """``h = phi(a + bias)`` for rows still inside their sequence (others are left for the
    caller): ``a (B, H)`` both products if ``summed`` (the step made them,
    :func:`~._blas.step_product`), else the recurrent product, to which the input product
    ``xw (B, H)`` is added first (``a`` overwritten); ``bias (H,)`` is added in the loop that
    applies ``phi``."""
    wide_vectors()
    B, H = h.shape
    for b in range(B):
        if t >= lengths[b]:
            continue
        a_b = a[b]
        h_b = h[b]
        if not summed:
            x_b = xw[b]
            for j in range(H):
                a_b[j] = a_b[j] + x_b[j]
        if relu:
            for j in range(H):
                v = a_b[j] + bias[j]
                h_b[j] = v if v > 0.0 else 0.0
        else:
            for j in range(H):
                h_b[j] = tanh(a_b[j] + bias[j])


@jit
def rnn_forward(x, w_ih, w_hh, w_t, xw, b_ih, b_hh, relu, lengths, reverse, zero_init, h_seq, a,
                xh, blas, b0, b1):
    """One direction of one layer over ``T`` steps, for the rows ``b0 .. b1 - 1`` of the batch.
    In: ``x (T, B, I)``, ``w_ih (H, I)``, ``w_hh (H, H)`` (packed for the tiles as they are),
    ``w_t (I + H, H)`` = ``[W_ih^T; W_hh^T]`` (what the BLAS reads; unread on the tiles, where
    it may be ``(0, H)``), ``xw (T, B, H)`` = ``x W_ih^T`` made beforehand where
    :func:`~._blas.projects_input_first` says so, else ``(T, B, 0)``: each step makes its whole
    pre-activation (:func:`~._blas.step_product`, as the LSTM's steps do), ``b_ih, b_hh (H,)``
    (summed here once), ``h_seq[init]`` (``init = T if reverse else 0``; zeroed here first if
    ``zero_init``). Out: ``h_seq (T + 1, B, H)``. Scratch ``a (b1 - b0, H)``, ``xh (b1 - b0,
    I + H)``. ``blas``: each step's products by the BLAS, else by register tiles
    (:func:`~._blas.product`)."""
    if zero_init:
        zero_initial(h_seq, x.shape[0], reverse, b0, b1)
    _rnn_forward_steps(x, w_t, xw, b_ih + b_hh, relu, lengths, reverse, h_seq, a, xh, blas, b0,
                       b1, prepare_step(w_ih, w_hh, w_t, blas))


@jit_borrowing
def _rnn_forward_steps(x, w_t, xw, bias, relu, lengths, reverse, h_seq, a, xh, blas, b0, b1,
                       step):
    """The time loop of :func:`rnn_forward` over its packed weights ``step``; compiled without
    reference counting (:data:`~._jit.jit_borrowing`): the step's views of the arrays cost
    nothing."""
    T = x.shape[0]
    lens = lengths[b0:b1]
    for s in range(T):
        t, p, q = step_indices(s, T, reverse)
        h_prev = h_seq[p, b0:b1]
        h_next = h_seq[q, b0:b1]
        summed = step_product(x[t, b0:b1], h_prev, w_t, step, xh, a, blas)
        rnn_cell(a, xw[t, b0:b1], bias, summed, relu, t, lens, h_next)
        carry_past_end(t, lens, h_prev, h_next)


def rnn_forward_blas(x, w_ih, w_hh, w_t, xw, b_ih, b_hh, relu, lengths, reverse, zero_init,
                     h_seq, a, xh, blas, b0, b1):
    """:func:`rnn_forward` stepped in Python with NumPy's BLAS: the fallback where the compiled
    loop cannot call NumPy's BLAS itself. Same arguments (``blas``, ``xh``, ``w_ih`` and
    ``w_hh`` ignored), same results up to summation order."""
    x, xw, h_seq, lengths = x[:, b0:b1], xw[:, b0:b1], h_seq[:, b0:b1], lengths[b0:b1]
    bias, T = b_ih + b_hh, x.shape[0]
    if zero_init:
        zero_initial_numpy(h_seq, T, reverse)
    summed = xw.shape[2] == 0                 # the layer made no x W_ih^T: the step makes it
    partial = bool((lengths < T).any())       # else carry_past_end has nothing to do
    for s in range(T):
        t, p, q = (T - 1 - s, T - s, T - 1 - s) if reverse else (s, s, s + 1)
        step_product_numpy(x[t], h_seq[p], w_t, a, summed)
        rnn_cell(a, xw[t], bias, summed, relu, t, lengths, h_seq[q])
        if partial:
            carry_past_end(t, lengths, h_seq[p], h_seq[q])


@jit_borrowing
def rnn_cell_backward(dh_t, h, relu, t, lengths, da):
    """``da = dh_t * phi'(a)`` from the step's output ``h``; zero past each length."""
    wide_vectors()
    B, H = dh_t.shape
    for b in range(B):
        da_b = da[b]
        if t >= lengths[b]:
            da_b[:] = 0.0
            continue
        d = dh_t[b]
        h_b = h[b]
        if relu:
            for j in range(H):
                da_b[j] = d[j] if h_b[j] > 0.0 else 0.0
        else:
            for j in range(H):
                da_b[j] = d[j] * (1.0 - h_b[j] * h_b[j])


@jit
def rnn_backward(dy, h_seq, w_ih, w_hh, relu, lengths, reverse, dh, da, dh_steps, dx, blas, b0,
                 b1):
    """BPTT for one direction, for the rows ``b0 .. b1 - 1`` of the batch. In: ``dy (T, B, H)``,
    ``h_seq`` from :func:`rnn_forward`, ``w_ih (H, I)``, ``w_hh (H, H)``. In/out: ``dh (B, H)``
    final-state gradient in, initial-state gradient out. Out: ``da (T, B, H)`` pre-activation
    gradients, ``dh_steps (T, B, H)`` total ``dL/dh_t``, ``dx (T, B, I)`` = ``da W_ih``, made
    step by step while ``da_t`` is in cache."""
    H = dy.shape[2]
    _rnn_backward_steps(dy, h_seq, w_ih, w_hh, relu, lengths, reverse, dh, da, dh_steps, dx,
                        blas, b0, b1, prepare(w_hh, 0, H, 0, H, blas),
                        prepare(w_ih, 0, H, 0, w_ih.shape[1], blas))


@jit_borrowing
def _rnn_backward_steps(dy, h_seq, w_ih, w_hh, relu, lengths, reverse, dh, da, dh_steps, dx,
                        blas, b0, b1, hh, ih):
    """The time loop of :func:`rnn_backward` over its packed weights ``hh, ih``; compiled without
    reference counting (:data:`~._jit.jit_borrowing`): the step's views of the arrays cost
    nothing."""
    T, B, H = dy.shape
    lens = lengths[b0:b1]
    dh_b = dh[b0:b1]
    for s in range(T):
        t, p, q = step_indices(T - 1 - s, T, reverse)
        dh_t = dh_steps[t, b0:b1]
        da_t = da[t, b0:b1]
        add_into(dh_t, dh_b, dy[t, b0:b1])
        rnn_cell_backward(dh_t, h_seq[q, b0:b1], relu, t, lens, da_t)
        product(da_t, w_hh, hh, dh_b, 0, H, 0, H, False, blas)
        product(da_t, w_ih, ih, dx[t, b0:b1], 0, H, 0, w_ih.shape[1], False, blas)
        carry_past_end(t, lens, dh_t, dh_b)


def rnn_backward_blas(dy, h_seq, w_ih, w_hh, relu, lengths, reverse, dh, da, dh_steps, dx, blas,
                      b0, b1):
    """:func:`rnn_backward` stepped in Python with NumPy's BLAS (the fallback of
    :func:`rnn_forward_blas`); same arguments."""
    dy, h_seq, da, dh_steps, dx = (v[:, b0:b1] for v in (dy, h_seq, da, dh_steps, dx))
    dh, lengths = dh[b0:b1], lengths[b0:b1]
    T = dy.shape[0]
    partial = bool((lengths < T).any())       # else carry_past_end has nothing to do
    for s in range(T):
        t, q = (s, s) if reverse else (T - 1 - s, T - s)
        dh_t = dh_steps[t]
        np.add(dh, dy[t], out=dh_t)
        rnn_cell_backward(dh_t, h_seq[q], relu, t, lengths, da[t])
        np.matmul(da[t], w_hh, out=dh)
        np.matmul(da[t], w_ih, out=dx[t])
        if partial:
            carry_past_end(t, lengths, dh_t, dh)


@jit
def rnn_step(x, w_ih_t, w_hh_t, bias, relu, ones, h, work):
    """One streaming step for ``B`` rows, in place: ``h (B, H)`` becomes the next state.
    ``w_ih_t (I, H)``, ``w_hh_t (H, H)``, ``bias (H,)`` = ``b_ih + b_hh``; ``ones (B,)`` int64
    ones; ``work`` 1-D scratch of at least ``2 B H`` entries."""
    B, H = h.shape
    a, end = take_block(work, 0, B, H)
    xa, _ = take_block(work, end, B, H)
    matmul_into(x, w_ih_t, xa, 0, x.shape[1], 0, H, False)
    matmul_into(h, w_hh_t, a, 0, H, 0, H, False)
    rnn_cell(a, xa, bias, False, relu, 0, ones, h)


@jit
def rnn_stream(x_flat, buffer, meta):
    """One streaming step of a stack of ``L`` unidirectional RNN layers, in place, in one call.

    ``buffer`` and ``meta`` as :func:`stream_layout` reads them, with the flag ``relu``.
    ``pack``: per layer ``w_ih_t (I_l, H)``, ``w_hh_t (H, H)``, ``bias (H,)``, raveled and
    concatenated. ``state``: per layer ``h (B, H)``. ``work``: scratch of ``2 B H``. ``x_flat`` is
    the input ``(B, I_0)`` raveled. Returns False, changing nothing, when it has a NaN or Inf.
    """
    L, B, H, flags, sizes, ones, x, pack, state, work = stream_layout(x_flat, buffer, meta, 1)
    if not all_finite(x_flat):
        return False
    relu = flags[0] != 0
    off = 0
    inp = x
    for k in range(L):
        w_ih_t, off = take_block(pack, off, sizes[k], H)
        w_hh_t, off = take_block(pack, off, H, H)
        bias_2d, off = take_block(pack, off, 1, H)
        h, _ = take_block(state, k * B * H, B, H)
        rnn_step(inp, w_ih_t, w_hh_t, bias_2d[0], relu, ones, h, work)
        inp = h
    return True

