r"""GRU kernels: forward over T steps, backward (BPTT) over T steps, one streaming step.

Shapes: ``T`` steps, ``B`` batch, ``H`` hidden. Time-major, C-contiguous, one dtype.
Gate order ``r, z, n`` as in ``torch.nn.GRU``. Precomputed ``xw = x W_ih^T + b_ih`` ``(T, B, 3H)``.

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

After the loop (caller, one product over all ``T * B`` rows): ``dW_ih = dxw^T x``,
``db_ih = sum dxw``, ``db_hh = sum dhw``, ``dW_hh = dhw^T h_{prev}`` (for ``reset_after=False``
the ``n`` block is ``dhw_n^T (r * h_{prev})``), ``dx = dxw W_ih``.
Rows past their length (``t >= lengths[b]``) carry their state and pass gradients through.
"""
import math

from ._blocks import add_into, carry_past_end, matmul_add, sigmoid, step_indices
from ._jit import jit


@jit
def gru_cell(xw, hw, h_prev, w_hh_t, reset_after, t, lengths, gates, hn, h):
    """One step for all rows. ``hw (B, 3H)`` enters as ``h_prev W_hh^T + b_hh`` (only the
    ``r, z`` blocks when ``reset_after`` is False; its ``n`` block then holds ``b_hn``). Writes
    ``gates (B, 3H)``, ``hn (B, H)`` and ``h (B, H)``."""
    B, H = h.shape
    for b in range(B):
        active = t < lengths[b]
        for j in range(H):
            if active:
                gates[b, j] = sigmoid(xw[b, j] + hw[b, j])
                gates[b, H + j] = sigmoid(xw[b, H + j] + hw[b, H + j])
            else:
                gates[b, j] = 0.0
                gates[b, H + j] = 0.0
            hn[b, j] = hw[b, 2 * H + j] if reset_after else gates[b, j] * h_prev[b, j]
    if not reset_after:
        matmul_add(hn, w_hh_t, hw, 0, H, 2 * H, 3 * H)
    for b in range(B):
        if t >= lengths[b]:
            for j in range(H):
                gates[b, 2 * H + j] = 0.0
                hn[b, j] = 0.0
                h[b, j] = h_prev[b, j]
            continue
        for j in range(H):
            r = gates[b, j]
            z = gates[b, H + j]
            if reset_after:
                n = math.tanh(xw[b, 2 * H + j] + r * hw[b, 2 * H + j])
            else:
                n = math.tanh(xw[b, 2 * H + j] + hw[b, 2 * H + j])
            gates[b, 2 * H + j] = n
            h[b, j] = (1.0 - z) * n + z * h_prev[b, j]


@jit
def gru_forward(xw, w_hh_t, b_hh, reset_after, lengths, reverse, gates, h_seq, hn, hw):
    """Run one direction of one layer over all ``T`` steps.

    In: ``xw (T, B, 3H)``; ``w_hh_t (H, 3H)`` = ``W_hh^T``; ``b_hh (3H,)`` (zeros without bias);
    ``h_seq[init]`` holds the initial state (``init = T if reverse else 0``).
    Out: ``gates (T, B, 3H)``, ``h_seq (T + 1, B, H)``, ``hn (T, B, H)``. Scratch ``hw (B, 3H)``.
    """
    T, B, G = xw.shape
    H = G // 3
    rz_end = 3 * H if reset_after else 2 * H
    for s in range(T):
        t, p, q = step_indices(s, T, reverse)
        for b in range(B):
            hw[b, :] = b_hh
        matmul_add(h_seq[p], w_hh_t, hw, 0, H, 0, rz_end)
        gru_cell(xw[t], hw, h_seq[p], w_hh_t, reset_after, t, lengths, gates[t], hn[t], h_seq[q])


@jit
def gru_backward(dy, gates, h_seq, hn, w_hh, reset_after, lengths, reverse,
                 dh, dxw, dhw, dh_steps, drh):
    """BPTT for one direction of one layer.

    In: ``dy (T, B, H)`` (zero past each length); tape arrays from :func:`gru_forward`;
    ``w_hh (3H, H)``. In/out: ``dh (B, H)``: gradient of the final state in, of the initial
    state out. Out: ``dxw``, ``dhw (T, B, 3H)`` (gradients of ``xw`` and of ``hw``, see module
    docstring), ``dh_steps (T, B, H)`` total ``dL/dh_t``. Scratch ``drh (B, H)``.
    """
    T, B, H = dy.shape
    rz_end = 3 * H if reset_after else 2 * H
    for s in range(T):
        t, p, q = step_indices(T - 1 - s, T, reverse)
        dh_t = dh_steps[t]
        add_into(dh_t, dh, dy[t])
        h_prev = h_seq[p]
        gx = dxw[t]
        gh = dhw[t]
        for b in range(B):
            if t >= lengths[b]:
                gx[b, :] = 0.0
                gh[b, :] = 0.0
                continue
            for j in range(H):
                r = gates[t, b, j]
                z = gates[t, b, H + j]
                n = gates[t, b, 2 * H + j]
                g = dh_t[b, j]
                dz_pre = g * (h_prev[b, j] - n) * z * (1.0 - z)
                dn_pre = g * (1.0 - z) * (1.0 - n * n)
                gx[b, H + j] = dz_pre
                gh[b, H + j] = dz_pre
                gx[b, 2 * H + j] = dn_pre
                if reset_after:
                    dr_pre = dn_pre * hn[t, b, j] * r * (1.0 - r)
                    gx[b, j] = dr_pre
                    gh[b, j] = dr_pre
                    gh[b, 2 * H + j] = dn_pre * r
                else:
                    gh[b, 2 * H + j] = dn_pre
        if not reset_after:
            drh[:, :] = 0.0
            matmul_add(gh, w_hh, drh, 2 * H, 3 * H, 0, H)
            for b in range(B):
                if t >= lengths[b]:
                    continue
                for j in range(H):
                    r = gates[t, b, j]
                    dr_pre = drh[b, j] * h_prev[b, j] * r * (1.0 - r)
                    gx[b, j] = dr_pre
                    gh[b, j] = dr_pre
        for b in range(B):
            for j in range(H):
                if t >= lengths[b]:
                    dh[b, j] = dh_t[b, j]
                elif reset_after:
                    dh[b, j] = dh_t[b, j] * gates[t, b, H + j]
                else:
                    dh[b, j] = dh_t[b, j] * gates[t, b, H + j] + drh[b, j] * gates[t, b, j]
        matmul_add(gh, w_hh, dh, 0, rz_end, 0, H)


@jit
def gru_step(x, w_ih_t, b_ih, w_hh_t, b_hh, reset_after, ones, h, xw, hw, gates, hn, h_next):
    """One streaming step for ``B`` rows: ``x (B, I)``, ``h (B, H)`` -> ``h_next (B, H)``.
    ``w_ih_t (I, 3H)``; ``ones (B,)`` int64 ones. Scratch ``xw``, ``hw``, ``gates (B, 3H)``,
    ``hn (B, H)``."""
    B, H = h.shape
    for b in range(B):
        xw[b, :] = b_ih
        hw[b, :] = b_hh
    matmul_add(x, w_ih_t, xw, 0, x.shape[1], 0, 3 * H)
    matmul_add(h, w_hh_t, hw, 0, H, 0, 3 * H if reset_after else 2 * H)
    gru_cell(xw, hw, h, w_hh_t, reset_after, 0, ones, gates, hn, h_next)
