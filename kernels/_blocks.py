"""Small building blocks shared by the cell kernels: a row-major product, step indexing, masking,
views of flat buffers, the finite check, the weights' transpose.

All functions are ``@njit`` (but :func:`all_finite_numpy`, the finite check as plain NumPy, and
:func:`transpose_into`, which picks NumPy or the compiled copy by size) and work in place on
arrays the caller owns.
"""
import numba
import numpy as np
from numba.core import types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from ._jit import jit, jit_any_order, jit_borrowing, wide_vectors


@jit_borrowing
def matmul_add(a, w, out, k0, k1, n0, n1):
    """``out[:, n0:n1] += a[:, k0:k1] @ w[k0:k1, n0:n1]`` for C-contiguous ``a (B, K)``,
    ``w (K, N)``, ``out (B, N)``; the ranges let a cell use one block of a stacked weight.

    Rows go in pairs and ``k`` in threes: each pass over a pair of ``out`` rows loads three rows
    of ``w`` and does six multiply-adds per column, so the loads and stores of ``out`` (the
    limit: one store per cycle) are shared by six products instead of four. Three rows of ``w``
    and two of ``out`` are five arrays, within the number LLVM checks for overlap before it
    vectorises a loop (with four rows of ``w`` it gives up and the loop runs scalar, 4x slower).
    The inner loops run along rows of ``w`` and ``out`` and are vectorised without reassociating
    any sum, so results do not depend on the vector width. A last odd row goes through
    :func:`_matmul_add_row`. Measured against pairs of ``k``, calls interleaved in one process
    (``B`` 2-32, ``K`` 8-96, ``N`` 96-384): float32 0-12 % faster where ``K >= 16`` (4 % slower at
    ``K = 8``), float64 within -8 % to +5 %. With 512-bit vectors where the CPU has them
    (:data:`~._jit.wide_vectors`; each column's sum is the same at any width): a float32
    streaming step at ``(I, H) = (32, 128)`` took 5.2 against 5.8 us (LSTM), 4.3 against 4.7
    (GRU).
    """
    wide_vectors()
    B = a.shape[0]
    b2 = B - B % 2
    k3 = k1 - (k1 - k0) % 3
    # every inner loop runs over views from index 0: with a non-zero start Numba must allow for
    # negative indices, and the wrap-around test it inserts keeps LLVM from vectorising
    for b in range(0, b2, 2):
        o0 = out[b, n0:n1]
        o1 = out[b + 1, n0:n1]
        a0 = a[b]
        a1 = a[b + 1]
        for k in range(k0, k3, 3):
            w0 = w[k, n0:n1]
            w1 = w[k + 1, n0:n1]
            w2 = w[k + 2, n0:n1]
            a00, a01, a02 = a0[k], a0[k + 1], a0[k + 2]
            a10, a11, a12 = a1[k], a1[k + 1], a1[k + 2]
            for n in range(o0.shape[0]):
                v0 = w0[n]
                v1 = w1[n]
                v2 = w2[n]
                o0[n] += a00 * v0 + a01 * v1 + a02 * v2
                o1[n] += a10 * v0 + a11 * v1 + a12 * v2
        for k in range(k3, k1):
            wk = w[k, n0:n1]
            a00 = a0[k]
            a10 = a1[k]
            for n in range(o0.shape[0]):
                o0[n] += a00 * wk[n]
                o1[n] += a10 * wk[n]
    if b2 < B:
        _matmul_add_row(a[b2], w, out[b2, n0:n1], k0, k1, n0, n1)


@jit_borrowing
def matmul_into(a, w, out, k0, k1, n0, n1, accumulate):
    """``out[:, n0:n1] (+)= a[:, k0:k1] @ w[k0:k1, n0:n1]``: :func:`matmul_add` onto what
    ``out`` holds if ``accumulate``, else onto zeros."""
    if not accumulate:
        zero_columns(out, n0, n1)
    matmul_add(a, w, out, k0, k1, n0, n1)


@jit_borrowing
def zero_columns(out, n0, n1):
    """``out[:, n0:n1] = 0`` for a 2-D array whose rows are contiguous."""
    for b in range(out.shape[0]):
        o = out[b, n0:n1]
        for n in range(o.shape[0]):
            o[n] = 0.0


@jit_borrowing
def _matmul_add_row(a_b, w, o, k0, k1, n0, n1):
    """One row of :func:`matmul_add`: ``o += a_b[k0:k1] @ w[k0:k1, n0:n1]``, four rows of ``w``
    per pass over ``o`` (one load and store of ``o`` per four multiply-adds)."""
    wide_vectors()
    k4 = k1 - (k1 - k0) % 4
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
def zero_initial(seq, T, reverse, b0, b1):
    """Zero the rows ``b0 .. b1 - 1`` of the initial state in the state sequence ``seq``, at
    index ``T`` if ``reverse`` else 0, taken modulo ``seq``'s length (a ``(T + 1, B, .)``
    sequence, or an inference's ``(2, B, H)`` ping-pong of ``c``). The time loops do it for a
    call that gives no initial state: from NumPy (``seq[0] = 0.0``) it cost 5-10 us a call
    after another library's call had taken the caches."""
    seq[(T if reverse else 0) % seq.shape[0], b0:b1] = 0.0


def zero_initial_numpy(seq, T, reverse):
    """:func:`zero_initial` for a whole batch, in NumPy (the time loops stepped in Python)."""
    seq[(T if reverse else 0) % seq.shape[0]] = 0.0


@jit_borrowing
def copy_into(dst, src):
    """``dst[:] = src`` for 1-D arrays of one length, as a plain loop (Numba's slice assignment
    goes through a general broadcasting path that costs more than a short row's copy)."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@jit_borrowing
def side_by_side(out, left, right):
    """``out = [left, right]``: each row of the 2-D ``out`` the row of ``left`` followed by the
    row of ``right`` (an LSTM step's ``[x_t, h_{t-1}]``, one operand for one product)."""
    n = left.shape[1]
    for b in range(out.shape[0]):
        row = out[b]
        copy_into(row[:n], left[b])
        copy_into(row[n:], right[b])


@jit_borrowing
def carry_past_end(t, lengths, prev, cur):
    """Rows whose sequence has ended (``t >= lengths[b]``) keep their previous state."""
    for b in range(lengths.shape[0]):
        if t >= lengths[b]:
            copy_into(cur[b], prev[b])


@jit_borrowing
def add_into(out, a, b):
    """``out = a + b`` element-wise for 2-D arrays of one shape, without a temporary."""
    B, N = out.shape
    for i in range(B):
        for j in range(N):
            out[i, j] = a[i, j] + b[i, j]


@jit_borrowing
def add_rows_f64(x, r0, r1, c0, c1, total):
    """``total[c0:c1] += x[r0:r1, c0:c1].sum(axis=0)`` for a C-contiguous ``x (N, G)``, every
    term added in float64 (``total (G,)`` float64), row after row: one pass, no float32 drift
    over long sums, vectorised. The block's bounds come as numbers, not as a 2-D view: Numba
    types a view of some columns as strided (layout ``A``), and a loop over it did not
    vectorise, nor did one indexing the whole rows from ``c0`` (each index checked for
    wrapping around): both added 1.0 ns an element here, against 0.3 (from memory) for this
    loop over 1-D slices, which Numba keeps contiguous."""
    part = total[c0:c1]
    for b in range(r0, r1):
        row = x[b, c0:c1]
        for j in range(part.shape[0]):
            part[j] += row[j]


@jit_borrowing
def _transpose_compiled(out, a):
    """``out = a.T`` for a 2-D ``a (N, K)`` and a C-contiguous ``out (K, N)``, in blocks of 32 x
    32: a plain strided copy reads one column of ``a`` per row of ``out``, and at a row length
    of 2 KiB every element of the column lands in the same cache set (NumPy's ``out[...] =
    a.T`` of a (2048, 512) float32 weight took 7.9 ms here, the blocks 0.9 ms)."""
    N, K = a.shape
    for n0 in range(0, N, 32):
        n1 = min(N, n0 + 32)
        for k0 in range(0, K, 32):
            for k in range(k0, min(K, k0 + 32)):
                row = out[k]
                for n in range(n0, n1):
                    row[n] = a[n, k]


#: weights of fewer entries are transposed by NumPy, which is faster for them (no compiled
#: call: a (256, 80) weight 6 us against 11)
BLOCKED_TRANSPOSE_MIN = 1 << 16


def transpose_into(out, a):
    """``out[...] = a.T`` for a 2-D ``a`` and a C-contiguous ``out``: a weight of at least
    ``BLOCKED_TRANSPOSE_MIN`` entries by :func:`_transpose_compiled`, a smaller one (and any as
    plain Python, ``NUMBA_DISABLE_JIT=1``) by NumPy."""
    if numba.config.DISABLE_JIT or a.size < BLOCKED_TRANSPOSE_MIN:
        np.copyto(out, a.T)
    else:
        _transpose_compiled(out, a)


def all_finite_numpy(x):
    """True when no entry of ``x`` is NaN or +-Inf (NumPy)."""
    return bool(np.isfinite(x).all())


@jit_any_order
def _all_finite_compiled(x):
    """True when no entry of the 1-D array ``x`` is NaN or +-Inf, in one vectorised pass.

    ``x - x`` is exactly 0 for a finite ``x`` and NaN for NaN or +-Inf, and NaN survives any
    sum, so the sum is 0 exactly when every entry is finite, in whatever order it is taken
    (which lets LLVM vectorise it: 3-4x faster than ``np.isfinite(x).all()`` for 128 to 12,800
    entries here, 2x for 400,000; an early-exit loop does not vectorise and was 2-6x slower
    than NumPy)."""
    if x.shape[0] == 0:
        return True
    total = x[0] - x[0]
    for j in range(1, x.shape[0]):
        total += x[j] - x[j]
    return total == 0.0


# plain Python (NUMBA_DISABLE_JIT=1): NumPy, not a loop over every entry
all_finite = all_finite_numpy if numba.config.DISABLE_JIT else _all_finite_compiled


@jit
def stream_layout(x_flat, buffer, meta, n_flags):
    """Read a stream's int64 layout table ``meta = [L, B, H, state_at, work_at, flag_1 ..
    flag_n, I_0 .. I_{L-1}]`` followed by ``B`` ones, over its flat ``buffer`` (the packed
    weights, then from ``state_at`` the state, then from ``work_at`` the scratch):
    ``(L, B, H, flags, sizes, ones, x, pack, state, work)``, with ``x`` the raveled input
    ``x_flat`` as ``(B, I_0)``. One place for the layout that the streaming kernels share (one
    buffer, not three arrays: each array argument costs a compiled call about 0.12 us)."""
    L, B, H = meta[0], meta[1], meta[2]
    state_at, work_at = meta[3], meta[4]
    flags = meta[5:5 + n_flags]
    sizes = meta[5 + n_flags:5 + n_flags + L]
    ones = meta[5 + n_flags + L:5 + n_flags + L + B]
    return (L, B, H, flags, sizes, ones, take_block(x_flat, 0, B, sizes[0])[0],
            buffer[:state_at], buffer[state_at:work_at], buffer[work_at:])


@jit
def take_block(pack, off, rows, cols):
    """The ``rows x cols`` block of the flat array ``pack`` starting at ``off``, as a C-contiguous
    2-D view, and the offset just after it (for the streams' flat buffers: weights, state and
    scratch). Raises IndexError if the block runs past the end of ``pack``.

    Compiled, the view is built directly (:func:`_matrix_view`): Numba's general ``reshape``
    costs about 25 ns a call here, and a streaming step took a dozen of them (0.3 us of a 1-2 us
    step)."""
    end = off + rows * cols
    if off < 0 or rows < 0 or cols < 0 or end > pack.shape[0]:
        raise IndexError("take_block: the block runs past the end of the flat array")
    return _matrix_view(pack, off, rows, cols), end


if numba.config.DISABLE_JIT:
    def _matrix_view(flat, off, rows, cols):
        """``flat[off:off + rows * cols]`` as a ``(rows, cols)`` view (unchecked)."""
        return flat[off:off + rows * cols].reshape((rows, cols))
else:
    @intrinsic
    def _matrix_view(typingctx, flat, off, rows, cols):
        """``flat[off:off + rows * cols]`` of a contiguous 1-D array as a C-contiguous ``(rows,
        cols)`` view sharing its memory (and its reference count); nothing is checked."""
        if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"):
            return None                                     # typing error: C-contiguous 1-D only
        result = types.Array(flat.dtype, 2, "C")

        def codegen(context, builder, signature, args):
            # imported here, at compile time: importing numba.np.arrayobj costs ~80 ms, which a
            # process that only loads cached kernels need not pay
            from numba.np.arrayobj import populate_array
            make_array = context.make_array
            src = make_array(signature.args[0])(context, builder, args[0])
            off_, rows_, cols_ = (context.cast(builder, args[i], signature.args[i], types.intp)
                                  for i in (1, 2, 3))
            itemsize = context.get_constant(types.intp,
                                            context.get_abi_sizeof(context.get_data_type(flat.dtype)))
            view = make_array(result)(context, builder)
            populate_array(view, data=builder.gep(src.data, [off_]),
                           shape=[rows_, cols_], strides=[builder.mul(cols_, itemsize), itemsize],
                           itemsize=src.itemsize, meminfo=src.meminfo, parent=src.parent)
            return impl_ret_borrowed(context, builder, result, view._getvalue())

        return result(flat, off, rows, cols), codegen
