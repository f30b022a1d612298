"""NumPy's BLAS product, called from inside the compiled time loops (and from
:func:`sum_outer_f32`, the float32 weight gradients summed in chunks).

A time loop that steps in Python (one ``np.matmul`` per step) needs the GIL between steps, so two
such loops in two threads keep handing the GIL to each other, and each waits for the other's
wake-up (measured: two half-batch loops in two threads ran slower than one full loop). A
compiled loop that calls the BLAS itself holds no GIL at all, and its blocks of rows run side by
side on every core (:mod:`lstm_np._threads`).

NumPy's wheels carry OpenBLAS built with 64-bit integers and a ``scipy_`` prefix. Its
``cblas_sgemm``/``cblas_dgemm`` are looked up once here (``ctypes``) and registered with LLVM
under fixed names, so a compiled kernel (cached on disk) calls them by name and finds them in
every process. Where NumPy's BLAS is another library, ``FOUND`` is False, the names point at
the kernels' own :func:`~._blocks.matmul_into` (so the kernels still link) and the layers step
their products in Python (the ``*_blas`` twins) instead.
"""
import ctypes
import glob
import os

import numpy as np
from llvmlite import binding as _llvm
from numba import carray, types
from numba.extending import overload, register_jitable

from ._blocks import add_rows_f64, matmul_into, side_by_side
from ._jit import jit, jit_borrowing
from ._tiles import panel_matmul, panel_width, prepare_panels, prepare_transposed, saves_a_pass

_PREFIX = "lstm_np_blas_"
_CBLAS_ROW_MAJOR, _CBLAS_NO_TRANS, _CBLAS_TRANS = 101, 111, 112


def _numpy_openblas():
    """NumPy's bundled OpenBLAS as a ``ctypes.CDLL`` (already loaded by NumPy), or None."""
    root = os.path.dirname(np.__file__)
    patterns = [os.path.join(os.path.dirname(root), "numpy.libs", "*openblas*"),
                os.path.join(root, ".dylibs", "*openblas*")]
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        try:
            lib = ctypes.CDLL(path)
            lib.scipy_cblas_sgemm64_, lib.scipy_cblas_dgemm64_          # both must be there
            return lib
        except (OSError, AttributeError):
            continue
    return None


def _gemm_signature(t):
    """``cblas_?gemm`` with 64-bit integers: order, trans_a, trans_b (int32 enums), M, N, K,
    alpha, A, lda, B, ldb, beta, C, ldc."""
    p = types.CPointer(t)
    return types.void(types.int32, types.int32, types.int32, types.int64, types.int64,
                      types.int64, t, p, types.int64, p, types.int64, t, p, types.int64)


def _loop_gemm(order, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc):
    """Row-major ``C = op(A) B + beta C`` by :func:`~._blocks.matmul_into`, ``op(A)`` being
    ``A`` or (``trans_a``) its transpose (``alpha`` is 1 and ``beta`` 0 or 1 in every call of
    :func:`gemm` and :func:`gemm_tn`). Where no BLAS was found the time loops do not call it; it
    lets the kernels link and serves :func:`sum_outer_f32`."""
    w, out = carray(B, (K, ldb)), carray(C, (M, ldc))
    if trans_a == _CBLAS_TRANS:
        matmul_into(carray(A, (K, lda))[:, :M].T, w, out, 0, K, 0, N, beta != 0.0)
    else:
        matmul_into(carray(A, (M, lda)), w, out, 0, K, 0, N, beta != 0.0)


_lib = _numpy_openblas()
FOUND = _lib is not None
_fallbacks = []
for _letter, _type in (("s", types.float32), ("d", types.float64)):
    if FOUND:
        _symbol = getattr(_lib, f"scipy_cblas_{_letter}gemm64_")
        _address = ctypes.cast(_symbol, ctypes.c_void_p).value
    else:                                                       # pragma: no cover - other BLAS
        from numba import cfunc
        _fallbacks.append(cfunc(_gemm_signature(_type), cache=True)(_loop_gemm))
        _address = _fallbacks[-1].address
    _llvm.add_symbol(f"{_PREFIX}{_letter}gemm", _address)
_GEMM = {t: types.ExternalFunction(f"{_PREFIX}{letter}gemm", _gemm_signature(t))
         for letter, t in (("s", types.float32), ("d", types.float64))}


def get_threads():
    """The number of threads NumPy's OpenBLAS runs (None where it was not found)."""
    if not FOUND:                                               # pragma: no cover - other BLAS
        return None
    return _lib.scipy_openblas_get_num_threads64_()


def set_threads(n):
    """Set NumPy's OpenBLAS to ``n`` threads and return the previous number (None, changing
    nothing, where it was not found)."""
    previous = get_threads()
    if previous is not None:
        _lib.scipy_openblas_set_num_threads64_(ctypes.c_int(n))
    return previous


def gemm(a, w, out, k0, k1, n0, n1, beta):
    """``out[:, n0:n1] = a[:, k0:k1] @ w[k0:k1, n0:n1] + beta * out[:, n0:n1]`` for 2-D arrays
    whose rows are each contiguous (``beta`` 0 or 1; with 0, ``out`` is not read). Compiled, it is
    one ``cblas_?gemm`` call without the GIL; run as Python (``NUMBA_DISABLE_JIT=1``), NumPy's
    matmul."""
    product = a[:, k0:k1] @ w[k0:k1, n0:n1]
    if beta == 0.0:
        out[:, n0:n1] = product
    else:
        out[:, n0:n1] += product


@overload(gemm, jit_options={"nogil": True})
def _gemm_compiled(a, w, out, k0, k1, n0, n1, beta):
    call = _GEMM[a.dtype]
    scalar = np.float32 if a.dtype == types.float32 else np.float64

    def impl(a, w, out, k0, k1, n0, n1, beta):
        M = a.shape[0]
        if M == 0 or n1 <= n0:
            return
        if k1 <= k0:                      # no terms: BLAS would leave out alone for beta = 1
            if beta == 0.0:
                out[:, n0:n1] = 0.0
            return
        call(np.int32(_CBLAS_ROW_MAJOR), np.int32(_CBLAS_NO_TRANS), np.int32(_CBLAS_NO_TRANS),
             M, n1 - n0, k1 - k0, scalar(1.0), a[:, k0:].ctypes, _leading(a), w[k0:, n0:].ctypes,
             _leading(w), scalar(beta), out[:, n0:].ctypes, _leading(out))

    return impl


def gemm_tn(a, w, out, beta):
    """``out = a^T @ w + beta * out`` for 2-D ``a (N, M)``, ``w (N, K)``, ``out (M, K)`` whose
    rows are each contiguous (``beta`` 0 or 1; with 0, ``out`` is not read): the product over
    the rows of ``a`` and ``w`` that weight gradients are made of. Compiled, one
    ``cblas_?gemm`` call (``a`` transposed by the BLAS) without the GIL; as Python, NumPy's
    matmul."""
    if beta == 0.0:
        np.matmul(a.T, w, out=out)
    else:
        out += a.T @ w


@overload(gemm_tn, jit_options={"nogil": True})
def _gemm_tn_compiled(a, w, out, beta):
    call = _GEMM[a.dtype]
    scalar = np.float32 if a.dtype == types.float32 else np.float64

    def impl(a, w, out, beta):
        N, M = a.shape
        if M == 0 or w.shape[1] == 0:
            return
        if N == 0:                        # no terms: BLAS would leave out alone for beta = 1
            if beta == 0.0:
                out[:, :] = 0.0
            return
        call(np.int32(_CBLAS_ROW_MAJOR), np.int32(_CBLAS_TRANS), np.int32(_CBLAS_NO_TRANS),
             M, w.shape[1], N, scalar(1.0), a.ctypes, _leading(a), w.ctypes, _leading(w),
             scalar(beta), out.ctypes, _leading(out))

    return impl


#: rows of :func:`sum_outer_f32`'s products: each entry of one is one chain of this many
#: multiply-adds in float32
SUM_CHUNK_ROWS = 128
#: products of :data:`SUM_CHUNK_ROWS` rows that :func:`sum_outer_f32` sums in float32 (the
#: BLAS adding each onto the last) before it adds them into its float64 total
SUM_CHUNKS_PER_GROUP = 8


@jit
def sum_outer_f32(dz, u, v, out, total, row_sums, g0, g1):
    """``out[g0:g1] = dz[:, g0:g1]^T [u, v]`` for float32 ``dz (N, G)``, ``u (N, K1)``, ``v (N,
    K2)`` (``K2`` may be 0), ``out (G, K1 + K2)`` (C-contiguous), ``N = T * B`` large: a weight
    gradient (an LSTM's two, against ``[x_t, h_{t-1}]``), summed so that its float32 error does
    not grow with ``N``. ``total (G, K1 + K2)`` float64 is scratch (rows ``g0:g1`` used).

    Each product of :data:`SUM_CHUNK_ROWS` rows runs as one BLAS call (one chain of 128
    multiply-adds per entry); the BLAS adds :data:`SUM_CHUNKS_PER_GROUP` of them up in
    ``out`` (``beta = 1``), and each such group of 1024 rows is added into ``total`` in
    float64. Before, every 128-row product went into the float64 total on its own, a pass of
    the whole ``(G, K)`` float64 total through memory every 128 rows (at ``(N, G, K) =
    (12800, 2048, 640)`` a third of the time). Old and new alternating, an LSTM's ``dz (T * B,
    4H)`` against ``[x, h] (T * B, I + H)`` at T = 100 (the BLAS on one thread per block):
    0.84 of the time on one thread and 0.82 on two at ``(B, I, H) = (128, 128, 512)``,
    0.89-0.93 at (64, 64, 256), 0.85-0.92 at (32, 32, 128), 0.72-0.83 at (8, 16, 64); float32
    training steps of the three cells 0.94-0.99 of the time on one thread (one reading of 1.02
    in this VM's noise), 0.95-1.00 on two. The same accuracy: largest relative error against
    float64 2.1-2.6e-7 both ways on random data (one float32 GEMM over all rows 3.9-4.4e-7);
    over 72 weight and bias gradients (three cells, (32, 32, 128) and (64, 64, 256), three
    inputs) lstm_np was less accurate than torch in 5 both before and after. Rows ``g0:g1``
    only, so threads can share ``out`` and ``total``.

    With ``v``, each chunk's ``[u, v]`` is put side by side in a scratch of 128 rows (in
    cache, in each thread) for its one product: before, the caller made all ``T * B`` rows of
    ``[u, v]`` first, a pass through memory on one thread (1.9 ms of a 52 ms float32 LSTM
    training step at ``(B, I, H) = (64, 64, 256)`` on two threads). One product of ``K1 + K2``
    columns runs faster than two, the first of them thin.

    ``row_sums (G,)`` float64, unless empty (a gradient without a bias): ``row_sums[g0:g1] +=``
    the sum of ``dz[:, g0:g1]``'s rows (the bias gradient), every term added in float64 in row
    order (:func:`~._blocks.add_rows_f64`, the same sum as over the whole ``dz`` at once), each
    chunk right after its product, while the BLAS has just brought it into the cache: before,
    a pass of its own over all of ``dz`` after the products (``T * B * G`` elements from
    memory, on one thread)."""
    N = u.shape[0]
    block = out[g0:g1]
    block_total = total[g0:g1]
    block_total[:, :] = 0.0
    joined = v.shape[1] > 0
    uv = np.empty((min(N, SUM_CHUNK_ROWS) if joined else 0, u.shape[1] + v.shape[1]), u.dtype)
    group = SUM_CHUNK_ROWS * SUM_CHUNKS_PER_GROUP
    for s in range(0, N, group):
        e = min(N, s + group)
        for c in range(s, e, SUM_CHUNK_ROWS):
            c1 = min(e, c + SUM_CHUNK_ROWS)
            operand = u[c:c1]
            if joined:
                operand = uv[:c1 - c]
                side_by_side(operand, u[c:c1], v[c:c1])
            gemm_tn(dz[c:c1, g0:g1], operand, block, 0.0 if c == s else 1.0)
            if row_sums.shape[0]:
                add_rows_f64(dz, c, c1, g0, g1, row_sums)
        block_total += block
    block[:, :] = block_total


@register_jitable
def _leading(x):
    """The row stride of the 2-D ``x`` in elements, the BLAS's "leading dimension". A single
    row's stride means nothing to NumPy and may be anything (a ``(1, N)`` transpose keeps the
    ``(N, 1)`` array's strides); the BLAS still wants at least the row length."""
    return x.strides[0] // x.itemsize if x.shape[0] > 1 else x.shape[1]


@jit
def prepare(w, k0, k1, n0, n1, blas):
    """The operand :func:`product` takes besides ``w`` for its block ``w[k0:k1, n0:n1]``: unless
    ``blas``, the block packed into panels with a scratch block
    (:func:`~._tiles.prepare_panels`), else empty arrays. A time loop prepares each weight block
    once and uses it for all ``T`` steps."""
    if blas:
        return _unpacked(w)
    return prepare_panels(w, k0, k1, n0, n1)


@jit
def _unpacked(w):
    """What :func:`product` takes on the BLAS for ``w``'s dtype: empty arrays of the types the
    tiles' ``(panels, scratch)`` have (the BLAS reads the weight itself)."""
    nt = panel_width(w.itemsize)
    return np.empty((0, 0, nt), w.dtype), np.empty((0, nt), w.dtype)


@jit_borrowing
def product(a, w, prepared, out, k0, k1, n0, n1, accumulate, blas):
    """``out[:, n0:n1] (+)= a[:, k0:k1] @ w[k0:k1, n0:n1]`` (``+=`` if ``accumulate``, else
    ``=``): the per-step product of every time loop, by the BLAS (``blas``; :func:`gemm`) or by
    register tiles (:func:`~._tiles.panel_matmul`) over ``prepared = prepare(w, k0, k1, n0, n1,
    blas)``. Rows of every operand must be contiguous."""
    if blas:
        gemm(a, w, out, k0, k1, n0, n1, 1.0 if accumulate else 0.0)
    else:
        panel_matmul(a, k0, prepared, out, n0, n1, accumulate)


#: the longest ``k`` (``I + P``) of an LSTM step that makes ``x_t W_ih^T`` in the loop on the
#: BLAS (:func:`projects_input_first`)
BLAS_IN_STEP_MAX_K = 384


@jit
def joins_step(I, P, blas):
    """Whether a step makes ``[x_t, h_{t-1}] [W_ih^T; W_hh^T]`` as one product over ``I + P``
    rows of ``k`` (:func:`step_product`) rather than ``x_t W_ih^T`` and ``h_{t-1} W_hh^T``
    apart: on the tiles, when that saves a pass (:func:`~._tiles.saves_a_pass`: at
    ``I + P <= 128`` one pass instead of two). Joined, ``(B, I, H) = (8, 16, 64)``: the product
    took 9.3 against 11.0 us a step in float64, 4.6 against 5.5 in float32 (compiled loop);
    LSTM layers at T = 100 0.88-0.93 of the time in inference, 0.92-1.04 in training. Where it
    saves no pass it measured no faster (0.92-1.22 of the two apart at ``(8, 32, 128)``,
    ``(32, 32, 128)`` and ``(32, 128, 128)``).

    Never on the BLAS: there one product over ``I + P`` (one chain of multiply-adds per entry,
    the bias added after) made float32 gradients less accurate. At ``(64, 64, 256)`` over six
    inputs the largest relative error of ``dW_hh`` against float64 was 3.4-4.3e-7 joined,
    2.0-2.9e-7 with the products apart and 3.0-3.8e-7 in torch: joined it was the less
    accurate of the two libraries in five of six."""
    return not blas and saves_a_pass(I, P)


@jit
def projects_input_first(I, P, blas):
    """Whether an LSTM layer makes ``x W_ih^T (T, B, 4H)`` for all steps by one big product
    before its time loop: on the BLAS, unless ``I <= P`` and ``I + P <=``
    :data:`BLAS_IN_STEP_MAX_K`. Elsewhere each step makes ``x_t W_ih^T`` itself
    (:func:`step_product`), and the ``(T, B, 4H)`` product never goes through memory. On the
    BLAS that took 0.87-0.91 (float32) and 0.96-0.99 (float64) of the time of LSTM inference
    at ``(64, 64, 256)``, 0.70-0.81 at ``(64, 16, 64)``, 0.76 (float32) and 1.00 (float64) at
    ``(128, 32, 128)``; training 0.92-0.95 at ``(64, 16, 64)``, 0.95-0.99 at ``(64, 64,
    256)``. Not where it measured slower: at ``(128, 128, 512)`` (``I + P = 640``) float32
    training took 1.04 of the time, and at ``I = 8P`` (``(64, 512, 64)``) float64 inference
    1.09: there the one big product over all ``T * B`` rows does the input part better."""
    return blas and not (I <= P and I + P <= BLAS_IN_STEP_MAX_K)


@jit
def prepare_step(w_ih, w_hh, w_t, blas):
    """What :func:`step_product` takes besides the weights: whether the step's two products
    are joined into one (:func:`joins_step`), whether the caller made ``x W_ih^T`` before the
    loop (:func:`projects_input_first`), and on the tiles the packed panels of the whole ``[W_ih^T;
    W_hh^T]`` (joined) or of its two parts (not joined), packed from ``w_ih (G, I)`` and ``w_hh
    (G, P)`` themselves (:func:`~._tiles.pack_transposed`). With ``blas`` nothing is packed:
    the BLAS reads ``w_t = [W_ih^T; W_hh^T] (I + P, G)`` (unread on the tiles)."""
    I, P = w_ih.shape[1], w_hh.shape[1]
    joined = joins_step(I, P, blas)
    G = w_ih.shape[0]
    none = w_hh[:, :0]
    return (joined, projects_input_first(I, P, blas),
            prepare_from_weights(w_ih, w_hh, 0, G, blas or not joined),
            prepare_from_weights(w_ih, none, 0, G, blas or joined),
            prepare_from_weights(w_hh, none, 0, G, blas or joined))


@jit
def prepare_from_weights(first, second, n0, n1, blas):
    """What :func:`product` takes for the block ``[first^T; second^T][:, n0:n1]`` of the
    transposes of ``first (N, K1)`` and ``second (N, K2)`` (``K2 = 0``: ``first^T`` alone):
    unless ``blas``, its panels packed from the weights as they are
    (:func:`~._tiles.prepare_transposed`: no transposed copy first), else empty arrays (the
    BLAS reads the transposes themselves)."""
    if blas:
        return _unpacked(first)
    return prepare_transposed(first, second, n0, n1)


def step_product_numpy(x_t, h_prev, w_t, a, summed):
    """:func:`step_product`'s BLAS cases in NumPy, for the time loops stepped in Python (the
    ``*_forward_blas`` twins): ``a = x_t W_ih^T + h_prev W_hh^T`` if ``summed`` (the layer made
    no ``x W_ih^T``), else ``a = h_prev W_hh^T`` alone."""
    I = x_t.shape[1]
    if summed:
        np.matmul(x_t, w_t[:I], out=a)
        a += h_prev @ w_t[I:]
    else:
        np.matmul(h_prev, w_t[I:], out=a)


@jit_borrowing
def step_product(x_t, h_prev, w_t, prepared, xh, a, blas):
    """The recurrent step's product ``a (B, G)`` from ``x_t (B, I)``, ``h_prev (B, P)`` and
    the weights ``[W_ih^T; W_hh^T]`` (``prepared = prepare_step(w_ih, w_hh, w_t, blas)``; ``w_t``
    the stacked transposes, read by the BLAS only), by the BLAS (``blas``) or the register
    tiles; the bias is not in it (the cells add it where they activate, one pass over ``a``
    fewer):

    - joined (tiles, :func:`joins_step`): ``a = [x_t, h_prev] [W_ih^T; W_hh^T]``, one
      product over the ``I + P`` rows of ``k`` through the scratch ``xh (B, I + P)``;
    - the input projected first (BLAS, :func:`projects_input_first`): ``a = h_prev W_hh^T``
      only (the caller made ``x W_ih^T`` for all steps at once and adds it);
    - else: ``a = x_t W_ih^T + h_prev W_hh^T``, two products in that order.

    The first product stores into ``a`` and the second adds to it: before, ``a`` was filled
    with the bias and every product added to it, an extra pass over ``a`` per step (a float32
    LSTM's products alone at ``(B, I, H) = (32, 32, 128)``: 0.92 of the time without it).

    Returns whether ``a`` holds both parts (all but the second case)."""
    joined, first, whole, ih, hh = prepared
    I = x_t.shape[1]
    K, G = I + h_prev.shape[1], a.shape[1]
    if first:
        product(h_prev, w_t[I:], hh, a, 0, K - I, 0, G, False, True)
        return False
    if joined:
        side_by_side(xh, x_t, h_prev)
        product(xh, w_t, whole, a, 0, K, 0, G, False, False)
    else:
        product(x_t, w_t[:I], ih, a, 0, I, 0, G, False, blas)
        product(h_prev, w_t[I:], hh, a, 0, K - I, 0, G, True, blas)
    return True
