"""Small building blocks shared by the cell kernels: a row-major product, step indexing, masking.

All functions are ``@njit`` and work in place on arrays the caller owns.
"""
from ._jit import jit


@jit
def matmul_add(a, w, out, k0, k1, n0, n1):
    """``out[:, n0:n1] += a[:, k0:k1] @ w[k0:k1, n0:n1]`` for C-contiguous ``a (B, K)``,
    ``w (K, N)``, ``out (B, N)``; the ranges let a cell use one block of a stacked weight.

    The inner loop runs along rows of ``w`` and ``out``, four rows of ``w`` at a time (one load
    and store of ``out`` per four multiply-adds); LLVM vectorises it without reassociating any
    sum, so results do not depend on the vector width.
    """
    B = a.shape[0]
    k4 = k1 - (k1 - k0) % 4
    # every inner loop runs over views from index 0: with a non-zero start Numba must allow for
    # negative indices, and the wrap-around test it inserts keeps LLVM from vectorising
    for b in range(B):
        o = out[b, n0:n1]
        a_b = a[b]
        for k in range(k0, k4, 4):
            a0 = a_b[k]
            a1 = a_b[k + 1]
            a2 = a_b[k + 2]
            a3 = a_b[k + 3]
            w0 = w[k, n0:n1]
            w1 = w[k + 1, n0:n1]
            w2 = w[k + 2, n0:n1]
            w3 = w[k + 3, n0:n1]
            for n in range(o.shape[0]):
                o[n] += a0 * w0[n] + a1 * w1[n] + a2 * w2[n] + a3 * w3[n]
        for k in range(k4, k1):
            av = a_b[k]
            wk = w[k, n0:n1]
            for n in range(o.shape[0]):
                o[n] += av * wk[n]


@jit
def step_indices(s, T, reverse):
    """For processing step ``s`` return ``(t, prev, cur)``.

    ``t`` is the time index of the input; ``prev``/``cur`` index the ``(T + 1, B, .)`` state
    sequence: forward keeps the initial state at 0 and step ``t`` at ``t + 1``, reverse keeps the
    initial state at ``T`` and step ``t`` at ``t``.
    """
    if reverse:
        t = T - 1 - s
        return t, t + 1, t
    return s, s, s + 1


@jit
def copy_into(dst, src):
    """``dst[:] = src`` for 1-D arrays of one length, as a plain loop (Numba's slice assignment
    goes through a general broadcasting path that costs more than a short row's copy)."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@jit
def carry_past_end(t, lengths, prev, cur):
    """Rows whose sequence has ended (``t >= lengths[b]``) keep their previous state."""
    for b in range(lengths.shape[0]):
        if t >= lengths[b]:
            copy_into(cur[b], prev[b])


@jit
def add_into(out, a, b):
    """``out = a + b`` element-wise for 2-D arrays of one shape, without a temporary."""
    B, N = out.shape
    for i in range(B):
        for j in range(N):
            out[i, j] = a[i, j] + b[i, j]


@jit
def all_finite(x):
    """True when every entry of the 2-D array ``x`` is finite (no NaN, no +-Inf)."""
    B, N = x.shape
    for b in range(B):
        for j in range(N):
            v = x[b, j]
            if v - v != 0.0:   # NaN - NaN and Inf - Inf are NaN
                return False
    return True


@jit
def take_block(pack, off, rows, cols):
    """The ``rows x cols`` block of the flat array ``pack`` starting at ``off``, as a C-contiguous
    2-D view, and the offset just after it (for unpacking concatenated weights)."""
    end = off + rows * cols
    return pack[off:end].reshape((rows, cols)), end
