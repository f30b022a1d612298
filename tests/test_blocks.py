"""The kernels' products (``matmul_add``, their own loops; ``panel_matmul``, the register tiles
of the time loops; ``product``, which also calls NumPy's BLAS from compiled code;
``step_product``, the LSTM step's joined or separate products; ``gemm_tn`` and
``sum_outer_f32``, the float32 weight gradients' chunked sums; ``_loop_gemm``, the product where
NumPy's BLAS is another library) and float64 row sums, against float64 NumPy, over every
remainder of the unrolled loops and chunks, sub-blocks of the operands and degenerate shapes;
the finite check against ``np.isfinite``."""
import numba
import numpy as np
import pytest

from lstm_np.kernels._blas import (BLAS_IN_STEP_MAX_K, SUM_CHUNK_ROWS, SUM_CHUNKS_PER_GROUP,
                                   gemm_tn, joins_step, prepare, prepare_step, product,
                                   projects_input_first, step_product, sum_outer_f32)
from lstm_np import _arrays
from lstm_np.kernels import _blas
from lstm_np.kernels._blocks import (add_rows_f64, all_finite, matmul_add, take_block,
                                     transpose_into)
from lstm_np.kernels import _tiles
from lstm_np.kernels._tiles import (DEPTH, ROWS, SHORT_ROWS, SPANS, VECTOR_BYTES, VECTORS,
                                    _tile_kernel, _vector_bytes, pack_panels, pack_transposed,
                                    panel_matmul, panel_width, prepare_panels,
                                    prepare_transposed, saves_a_pass, tiles_matmul)

TOLERANCE = {np.float32: 2e-6, np.float64: 1e-14}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("K", [1, 2, 3, 4, 5, 6, 7, 64])
def test_matmul_add_ranges(dtype, B, K):
    """``out[:, n0:n1] += a[:, k0:k1] @ w[k0:k1, n0:n1]``: the rows pair up (odd ``B`` leaves
    one), ``k`` runs in threes (every remainder), and nothing outside the ranges changes."""
    rng = np.random.default_rng(B * 100 + K)
    k0, n0, n1 = 2, 3, 29
    a = rng.standard_normal((B, k0 + K + 1)).astype(dtype)
    w = rng.standard_normal((k0 + K + 1, 33)).astype(dtype)
    out = rng.standard_normal((B, 33)).astype(dtype)
    expected = out.astype(np.float64)
    expected[:, n0:n1] += a[:, k0:k0 + K].astype(np.float64) @ w[k0:k0 + K, n0:n1]
    matmul_add(a, w, out, k0, k0 + K, n0, n1)
    scale = 1.0 + np.abs(a[:, k0:k0 + K]).astype(np.float64) @ np.abs(w[k0:k0 + K]) \
        + np.abs(expected)
    assert np.all(np.abs(out - expected) <= TOLERANCE[dtype] * K * scale)
    untouched = np.ones(33, bool)
    untouched[n0:n1] = False
    assert np.array_equal(out[:, untouched], expected[:, untouched].astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_panels_layout(dtype):
    """Panel ``p`` holds columns ``n0 + p NT ..`` of the block, rows ``k0 .. k1``, and zeros past
    the block's last column."""
    nt = panel_width(np.dtype(dtype).itemsize)
    assert nt * np.dtype(dtype).itemsize == VECTORS * VECTOR_BYTES
    w = np.arange(9 * (2 * nt + 12), dtype=dtype).reshape(9, 2 * nt + 12)
    k0, k1, n0, n1 = 2, 7, 3, 3 + 2 * nt + 5
    panels = pack_panels(w, k0, k1, n0, n1)
    assert panels.shape == (3, k1 - k0, nt)
    joined = panels.transpose(1, 0, 2).reshape(k1 - k0, 3 * nt)
    assert np.array_equal(joined[:, :n1 - n0], w[k0:k1, n0:n1])
    assert not joined[:, n1 - n0:].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K1,K2", [(5, 9), (7, 0), (0, 4), (DEPTH + 3, 2)])
def test_pack_transposed_is_pack_panels_of_the_transposes(dtype, K1, K2):
    """The panels packed from ``W_ih (N, K1)`` and ``W_hh (N, K2)`` as they are are exactly
    those of ``[W_ih^T; W_hh^T]`` (the stacked transposes the time loops read before), for a
    block of columns that leaves a short last panel and for all of them."""
    nt = panel_width(np.dtype(dtype).itemsize)
    rng = np.random.default_rng(K1 * 10 + K2)
    N = 2 * nt + 7
    first = rng.standard_normal((N, K1)).astype(dtype)
    second = rng.standard_normal((N, K2)).astype(dtype)
    stacked = np.concatenate([first.T, second.T], axis=0)
    for n0, n1 in ((0, N), (3, nt + 5)):
        expected = pack_panels(stacked, 0, K1 + K2, n0, n1)
        assert np.array_equal(pack_transposed(first, second, n0, n1), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_panels_and_their_scratch_start_a_cache_line(dtype):
    """Every panel row is whole vectors (three), and a vector divides a cache line, so with the
    panels' first element on a line no vector load of a tile straddles two lines. Numba's own
    arrays start on 32 bytes; many shapes, so that an allocator that happened to land on a line
    would not pass alone."""
    nt = panel_width(np.dtype(dtype).itemsize)
    assert nt * np.dtype(dtype).itemsize == VECTORS * VECTOR_BYTES
    assert _tiles.LINE % VECTOR_BYTES == 0
    rng = np.random.default_rng(3)
    for K, N in [(1, 1), (3, nt + 1), (5, 2 * nt), (17, 3 * nt + 7), (DEPTH + 1, nt - 1)] * 3:
        w = rng.standard_normal((K, N)).astype(dtype)
        panels, scratch = prepare_panels(w, 0, K, 0, N)
        assert panels.ctypes.data % _tiles.LINE == 0 and scratch.ctypes.data % _tiles.LINE == 0
        assert panels.flags.c_contiguous and scratch.flags.c_contiguous
        assert not scratch.any()
        joined = panels.transpose(1, 0, 2).reshape(K, -1)
        assert np.array_equal(joined[:, :N], w) and not joined[:, N:].any()
        both = prepare_transposed(w.T, np.zeros((N, 0), dtype), 0, N)[0]
        assert both.ctypes.data % _tiles.LINE == 0 and np.array_equal(both, panels)




def panel_shapes(nt):
    """``(B, K, N)`` cases for panels of ``nt`` columns. Rows: blocks of ROWS and single rows;
    K: one pass, a pass boundary, several; N: within one panel, exactly a panel, a short last
    panel, one-row spans of SPANS panels with and without a remainder, none."""
    lanes = nt // VECTORS                 # a last panel of one or two vectors: a narrow tile
    return [(1, 1, 1), (1, 7, 3), (3, 5, nt + 1), (ROWS, 1, nt), (ROWS + 1, 9, nt + 6),
            (2 * ROWS + 1, DEPTH + 3, SPANS * nt + 5), (ROWS, 2 * DEPTH + 1, nt // 2 + 1),
            (1, DEPTH, SPANS * nt), (1, 3, 2 * SPANS * nt - 1), (ROWS + 3, 0, 10), (6, 40, 0),
            (ROWS + 1, 9, nt + lanes), (ROWS, DEPTH + 1, 2 * nt + 2 * lanes), (1, 5, lanes),
            (1, 5, 3 * nt + lanes), (1, 6, 2 * nt), (ROWS + 2, 7, SPANS * nt + 2 * nt + 2 * lanes),
            # a block of SHORT_ROWS after the blocks of ROWS (where ROWS is larger), and after it
            # single rows, against full, narrow and odd last panels
            (SHORT_ROWS, 5, 2 * nt + 2 * lanes), (ROWS + SHORT_ROWS, DEPTH + 2, nt + lanes),
            (ROWS + SHORT_ROWS + 3, 11, 2 * nt + 5), (SHORT_ROWS + 1, 4, SPANS * nt + nt)]


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_panel_matmul(dtype, accumulate):
    """``out[:, n0:n1] (+)= a[:, k0:k1] @ w[k0:k1, n0:n1]`` through packed panels, against
    float64 NumPy; without ``accumulate`` the old ``out`` (NaN) is never read; columns outside
    ``n0:n1`` are untouched."""
    rng = np.random.default_rng(7)
    for B, K, N in panel_shapes(panel_width(np.dtype(dtype).itemsize)):
        k0, n0 = 3, 2
        a, w, out, expected = _product_case(rng, dtype, B, K, N, k0, n0, accumulate)
        panel_matmul(a, k0, prepare_panels(w, k0, k0 + K, n0, n0 + N), out, n0, n0 + N,
                     accumulate)
        scale = 1.0 + np.abs(expected)
        scale[:, n0:n0 + N] += np.abs(a[:, k0:k0 + K]).astype(np.float64) \
            @ np.abs(w[k0:k0 + K, n0:n0 + N])
        assert np.all(np.abs(out - expected) <= TOLERANCE[dtype] * max(K, 1) * scale), (B, K, N)
        _assert_outside_untouched(out, expected, n0, N)


def _product_case(rng, dtype, B, K, N, k0, n0, accumulate):
    """``a, w, out`` for ``out[:, n0:n0 + N] (+)= a[:, k0:k0 + K] @ w[k0:k0 + K, n0:n0 + N]``
    inside larger arrays (NaN in that block of ``out`` unless ``accumulate``), and the expected
    ``out`` in float64."""
    a = rng.standard_normal((B, k0 + K + 2)).astype(dtype)
    w = rng.standard_normal((k0 + K + 2, n0 + N + 3)).astype(dtype)
    out = rng.standard_normal((B, n0 + N + 3)).astype(dtype)
    if not accumulate:
        out[:, n0:n0 + N] = np.nan
    expected = out.astype(np.float64)
    block = a[:, k0:k0 + K].astype(np.float64) @ w[k0:k0 + K, n0:n0 + N]
    expected[:, n0:n0 + N] = expected[:, n0:n0 + N] + block if accumulate else block
    return a, w, out, expected


def _assert_outside_untouched(out, expected, n0, N):
    """Columns outside ``n0 .. n0 + N`` kept their values, bitwise."""
    outside = np.ones(out.shape[1], bool)
    outside[n0:n0 + N] = False
    assert np.array_equal(out[:, outside], expected[:, outside].astype(out.dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_panel_matmul_rows_do_not_depend_on_the_block(dtype):
    """A row's result is bitwise the same whether it falls in a block of ``ROWS`` rows or is
    left over, and whatever the batch: each entry is one chain of multiply-adds in ``k`` order
    (the threads' blocks of rows rely on this)."""
    rng = np.random.default_rng(1)
    K, N = DEPTH + 37, SPANS * panel_width(np.dtype(dtype).itemsize) + 7
    a = rng.standard_normal((2 * ROWS + SHORT_ROWS + 1, K)).astype(dtype)
    w = rng.standard_normal((K, N)).astype(dtype)
    prepared = prepare_panels(w, 0, K, 0, N)
    whole = np.empty((a.shape[0], N), dtype)
    panel_matmul(a, 0, prepared, whole, 0, N, False)
    for b in range(a.shape[0]):
        alone = np.empty((1, N), dtype)
        panel_matmul(a[b:b + 1], 0, prepared, alone, 0, N, False)
        assert np.array_equal(alone[0], whole[b]), b
    shifted = np.empty((ROWS, N), dtype)
    panel_matmul(a[1:1 + ROWS], 0, prepared, shifted, 0, N, False)
    assert np.array_equal(shifted, whole[1:1 + ROWS])
    short = np.empty((SHORT_ROWS, N), dtype)
    panel_matmul(a[3:3 + SHORT_ROWS], 0, prepared, short, 0, N, False)
    assert np.array_equal(short, whole[3:3 + SHORT_ROWS])


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_panel_matmul_columns_do_not_depend_on_the_order_of_the_passes(dtype, accumulate):
    """An entry is bitwise the same whether its panel goes through all its passes at a time
    (``K <= N``: many columns) or each pass goes through all panels first (``K > N``: few):
    either way each pass is one chain from zero, and the passes are summed in ``k`` order."""
    rng = np.random.default_rng(5)
    nt = panel_width(np.dtype(dtype).itemsize)
    K = 2 * DEPTH + 5
    wide, narrow = (K // nt + 2) * nt + 3, 2 * nt + 3     # K <= wide, K > narrow
    assert narrow < K <= wide
    a = rng.standard_normal((2 * ROWS + SHORT_ROWS + 1, K)).astype(dtype)
    w = rng.standard_normal((K, wide)).astype(dtype)
    start = rng.standard_normal((a.shape[0], wide)).astype(dtype)
    results = []
    for N in (wide, narrow):
        out = start[:, :N].copy()
        panel_matmul(a, 0, prepare_panels(w, 0, K, 0, N), out, 0, N, accumulate)
        results.append(out)
    assert np.array_equal(results[0][:, :narrow], results[1])
    expected = (start[:, :narrow] if accumulate else 0.0) + a.astype(np.float64) @ w[:, :narrow]
    assert np.allclose(results[1], expected, rtol=0, atol=TOLERANCE[dtype] * K * 10)


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="compares compiled tiles of several "
                    "vector widths; as plain Python a tile has no vectors")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiles_give_the_same_bits_at_every_vector_width(dtype):
    """A model's outputs do not depend on the machine's vector width (:func:`_vector_bytes`): a
    tile of 16-, 32- and (where the CPU has them) 64-byte vectors gives bitwise the same
    entries, each one chain of fused multiply-adds in ``k`` order."""
    rng = np.random.default_rng(11)
    nt = panel_width(np.dtype(dtype).itemsize)
    K = DEPTH + 5
    a = rng.standard_normal((ROWS, K)).astype(dtype)
    panels = pack_panels(rng.standard_normal((K, nt)).astype(dtype), 0, K, 0, nt)
    results = {}
    for width in sorted({16, 32, VECTOR_BYTES}):
        tile = _tile_kernel(ROWS, 1, VECTORS, width)

        @numba.njit
        def run(a, panels, out):
            tile(a, 0, 0, panels, 0, 0, panels.shape[1], out, 0, 0, False)

        out = np.full((ROWS, nt), np.nan, dtype)
        run(a, panels, out)
        results[width] = out[:, :VECTORS * width // np.dtype(dtype).itemsize]
    assert len(results) >= 2
    narrowest = results[16]
    for width, out in results.items():
        assert not np.isnan(out).any(), width
        assert np.array_equal(out, results[max(results)][:, :out.shape[1]]), width
    assert np.allclose(narrowest, a.astype(np.float64) @ panels[0, :, :narrowest.shape[1]],
                       rtol=0, atol=TOLERANCE[dtype] * K * 10)


@pytest.mark.parametrize("features, width", [("+avx,+avx2,+fma,-avx512f", 32),
                                             ("+avx,+avx2,+avx512f,+avx512vl", 64), ("", 32)])
def test_vector_bytes_follows_numbas_cpu_features(monkeypatch, features, width):
    """The tiles' vector width is read from the CPU features Numba compiles for
    (``NUMBA_CPU_FEATURES`` when set): AVX-512 gives 64 bytes, anything else 32."""
    monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
    assert _vector_bytes() == width


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiles_matmul(dtype):
    """``out = a @ w`` over many rows by the tiles (the layers' input projection), against
    float64 NumPy, every entry written; ``w`` C-contiguous and ``w`` the transpose of a weight
    (packed from the weight's rows): bitwise the same on the tiles."""
    rng = np.random.default_rng(9)
    for M, K, N in [(800, 16, 64), (13, 3, 130), (1, DEPTH, 7), (37, 1, 48), (9, 2, 1)]:
        a = rng.standard_normal((M, K)).astype(dtype)
        weight = rng.standard_normal((N, K)).astype(dtype)
        w = np.ascontiguousarray(weight.T)
        out = np.full((M, N), np.nan, dtype)
        tiles_matmul(a, w, out)
        expected = a.astype(np.float64) @ w
        scale = 1.0 + np.abs(a).astype(np.float64) @ np.abs(w)
        assert np.all(np.abs(out - expected) <= TOLERANCE[dtype] * K * scale), (M, K, N)
        transposed = np.full((M, N), np.nan, dtype)
        tiles_matmul(a, weight.T, transposed)
        if numba.config.DISABLE_JIT:      # NumPy's matmul: its own order for a transposed operand
            assert np.all(np.abs(transposed - expected) <= TOLERANCE[dtype] * K * scale)
        else:
            assert np.array_equal(transposed, out), (M, K, N)


@pytest.mark.parametrize("shape", [(1, 1), (33, 7), (64, 96), (70, 31), (2048, 40)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_into(dtype, shape):
    """``out = a.T`` exactly, for whole and partial 32 x 32 blocks, from a C-contiguous weight
    and from a strided view; ``out`` is written and nothing around it."""
    a = np.random.default_rng(3).standard_normal((shape[0], 2 * shape[1])).astype(dtype)
    for source in (np.ascontiguousarray(a[:, :shape[1]]), a[:, ::2]):
        out = np.full((shape[1] + 1, shape[0]), 7.0, dtype)
        transpose_into(out[:shape[1]], source)
        assert np.array_equal(out[:shape[1]], source.T)
        assert np.all(out[shape[1]] == 7.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_rows_f64_sums_in_float64(dtype):
    """Every term is added in float64: 10^5 rows of ``1 + 2^-20`` (exact in float32) plus one
    row of ``2^24`` sum to the float64 answer, which a float32 running sum loses entirely."""
    x = np.full((100_001, 3), 1.0 + 2.0 ** -20, dtype)
    x[0] = 2.0 ** 24
    total = np.zeros(3)
    add_rows_f64(x, 0, x.shape[0], 0, 3, total)
    assert np.array_equal(total, np.full(3, 2.0 ** 24 + 100_000 * (1.0 + 2.0 ** -20)))
    part = np.full(3, 0.5)                    # a block of rows and columns, the rest left alone
    add_rows_f64(x, 1, 11, 1, 2, part)
    assert np.array_equal(part, [0.5, 0.5 + 10 * (1.0 + 2.0 ** -20), 0.5])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("N", [0, 1, 5, 130])
def test_gemm_tn(dtype, beta, N):
    """``out = a^T w + beta out`` by the BLAS with ``a`` transposed, for a column block of a
    wider ``a`` (rows not contiguous with each other) into a row block of ``out``; with no rows
    (``N = 0``) ``out`` becomes zeros or stays as it was."""
    rng = np.random.default_rng(N * 10 + int(beta))
    a = rng.standard_normal((N, 11)).astype(dtype)
    w = rng.standard_normal((N, 6)).astype(dtype)
    out = rng.standard_normal((9, 6)).astype(dtype)
    expected = out.astype(np.float64)
    expected[2:7] = beta * expected[2:7] + a[:, 3:8].T.astype(np.float64) @ w
    gemm_tn(a[:, 3:8], w, out[2:7], beta)
    scale = 1.0 + np.abs(expected[2:7]) + np.abs(a[:, 3:8].T).astype(np.float64) @ np.abs(w)
    assert np.all(np.abs(out[2:7] - expected[2:7]) <= TOLERANCE[dtype] * max(N, 1) * scale)
    assert np.array_equal(out[:2], expected[:2]) and np.array_equal(out[7:], expected[7:])


@pytest.mark.parametrize("trans_a", [False, True])
def test_loop_gemm_fallback(trans_a):
    """The product the kernels link against where NumPy's BLAS is not its bundled OpenBLAS
    (``_blas._loop_gemm``, compiled here as there into a C callback; plain Python without the
    JIT): row-major ``C = op(A) B + beta C`` from raw pointers and leading dimensions wider than
    the rows, ``A`` transposed or not, as :func:`gemm` and :func:`gemm_tn` call it."""
    import ctypes
    rng = np.random.default_rng(int(trans_a))
    M, N, K, lead = 5, 4, 7, 9
    a = rng.standard_normal((K, lead) if trans_a else (M, lead)).astype(np.float32)
    w = rng.standard_normal((K, lead)).astype(np.float32)
    out = rng.standard_normal((M, lead)).astype(np.float32)
    op_a = a[:, :M].T if trans_a else a[:, :K]
    expected = out[:, :N] + op_a.astype(np.float64) @ w[:, :N]
    beyond = out[:, N:].copy()

    def pointer(x):
        return x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    loop_gemm = _blas._loop_gemm
    if not numba.config.DISABLE_JIT:          # as the kernels link it: a compiled C callback
        loop_gemm = numba.cfunc(_blas._gemm_signature(numba.types.float32),
                                cache=False)(loop_gemm).ctypes
    loop_gemm(101, 112 if trans_a else 111, 111, M, N, K, 1.0, pointer(a), lead, pointer(w),
              lead, 1.0, pointer(out), lead)
    assert np.allclose(out[:, :N], expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(out[:, N:], beyond)


@pytest.mark.parametrize("N", [0, 1, SUM_CHUNK_ROWS - 1, SUM_CHUNK_ROWS + 1,
                               SUM_CHUNK_ROWS * SUM_CHUNKS_PER_GROUP,
                               SUM_CHUNK_ROWS * SUM_CHUNKS_PER_GROUP + 3, 3000])
def test_sum_outer_f32_rows_block(N):
    """``out[g0:g1] = dz[:, g0:g1]^T [u, v]`` over every remainder of the chunks and groups of
    rows; rows of ``out`` outside ``g0:g1`` are left alone (two threads share it). ``u`` and
    ``v`` side by side give the product over ``[u, v]`` made first, bitwise. The row sums (a
    bias gradient), made chunk by chunk beside the products, are added onto ``row_sums[g0:g1]``
    and are bitwise :func:`add_rows_f64` over the whole block at once (the same terms in the
    same order); without them (an empty ``row_sums``) ``out`` is the same."""
    rng = np.random.default_rng(N)
    G, K1, K2, g0, g1 = 13, 3, 2, 2, 11
    dz = rng.standard_normal((N, G)).astype(np.float32)
    uv = rng.standard_normal((N, K1 + K2)).astype(np.float32)
    u, v = np.ascontiguousarray(uv[:, :K1]), np.ascontiguousarray(uv[:, K1:])
    out = np.full((G, K1 + K2), np.nan, np.float32)
    total = np.full((G, K1 + K2), np.nan)
    row_sums = np.full(G, 0.25)
    sum_outer_f32(dz, u, v, out, total, row_sums, g0, g1)
    expected = dz[:, g0:g1].T.astype(np.float64) @ uv
    scale = 1.0 + np.abs(dz[:, g0:g1].T).astype(np.float64) @ np.abs(uv)
    assert np.all(np.abs(out[g0:g1] - expected) <= TOLERANCE[np.float32] * SUM_CHUNK_ROWS * scale)
    assert np.isnan(out[:g0]).all() and np.isnan(out[g1:]).all()
    sums = np.full(g1 - g0, 0.25)
    add_rows_f64(np.ascontiguousarray(dz[:, g0:g1]), 0, N, 0, g1 - g0, sums)
    assert np.array_equal(row_sums[g0:g1], sums)
    assert np.all(row_sums[:g0] == 0.25) and np.all(row_sums[g1:] == 0.25)
    for first, second in ((uv, uv[:, :0]), (u, v)):          # joined first; no bias sums
        alone = np.full((G, K1 + K2), np.nan, np.float32)
        sum_outer_f32(dz, first, second, alone, total, np.zeros(0), g0, g1)
        assert np.array_equal(alone, out, equal_nan=True)


def test_sum_outer_f32_error_does_not_grow_with_rows():
    """2^18 rows of positive terms (a sum that float32 accumulates badly): the result is the
    float64 sum rounded once to float32 (relative error 4.8e-8 here), where one float32 GEMM
    over all rows (NumPy's) was 7.5e-7 off and a running float32 sum 8.3e-6."""
    rng = np.random.default_rng(0)
    N = 1 << 18
    dz = rng.uniform(0.5, 1.5, (N, 3)).astype(np.float32)
    v = rng.uniform(0.5, 1.5, (N, 2)).astype(np.float32)
    expected = dz.astype(np.float64).T @ v.astype(np.float64)
    out = np.empty((3, 2), np.float32)
    sum_outer_f32(dz, v, v[:, :0], out, np.empty((3, 2)), np.zeros(0), 0, 3)
    assert np.max(np.abs(out - expected)) / np.max(np.abs(expected)) <= 1e-7


@pytest.mark.parametrize("blas", [False, True], ids=["loops", "blas"])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 7, 3), (5, 1, 4), (6, 9, 1), (8, 33, 20)])
def test_product(blas, accumulate, dtype, M, K, N):
    """``product``: ``out[:, n0:n1] (+)= a[:, k0:k1] @ w[k0:k1, n0:n1]`` by the BLAS or the
    loops, on sub-blocks of larger arrays; without ``accumulate`` the old ``out`` (NaN here) is
    never read; columns outside ``n0:n1`` are untouched."""
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    k0, n0 = 1, 2
    a, w, out, expected = _product_case(rng, dtype, M, K, N, k0, n0, accumulate)
    product(a, w, prepare(w, k0, k0 + K, n0, n0 + N, blas), out, k0, k0 + K, n0, n0 + N,
            accumulate, blas)
    assert np.allclose(out, expected, rtol=50 * TOLERANCE[dtype], atol=50 * K * TOLERANCE[dtype])
    _assert_outside_untouched(out, expected, n0, N)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_single_row_with_any_stride(dtype):
    """A ``(1, N)`` array may carry any row stride (the transpose of a C-contiguous ``(N, 1)``
    does, and NumPy still calls it C-contiguous); the BLAS must still get a valid leading
    dimension and the right answer."""
    w = np.ascontiguousarray(np.arange(1.0, 4.0, dtype=dtype).reshape(3, 1).T)   # (1, 3)
    assert w.strides[0] != 3 * w.itemsize
    a = np.full((2, 1), 2.0, dtype)
    out = np.full((2, 3), np.nan, dtype)
    product(a, w, prepare(w, 0, 1, 0, 3, True), out, 0, 1, 0, 3, False, True)
    assert np.array_equal(out, np.array([[2.0, 4.0, 6.0]] * 2, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_take_block_is_a_view_of_the_flat_buffer(dtype):
    """``take_block`` (the streams' views of their flat buffer, built without ``reshape`` when
    compiled) gives the ``rows x cols`` block at ``off`` and the offset after it, sharing memory
    with the buffer, and refuses a block that runs past the end."""
    pack = np.arange(50, dtype=dtype)
    block, end = take_block(pack, 7, 4, 6)
    assert end == 31 and block.shape == (4, 6) and block.flags.c_contiguous
    assert np.array_equal(block, pack[7:31].reshape(4, 6))
    block[1, 2] = -1.0
    assert pack[7 + 6 + 2] == -1.0
    empty, end = take_block(pack, 50, 0, 3)
    assert empty.shape == (0, 3) and end == 50
    with pytest.raises(IndexError, match="past the end"):
        take_block(pack, 45, 2, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_finds_one_bad_entry_anywhere(dtype, bad):
    """One NaN or Inf at any place of any length up to 70 (every remainder of the vectorised
    loop, both ends) is found; the largest finite values, subnormals and -0 are finite."""
    info = np.finfo(dtype)
    for n in range(71):
        x = np.resize(np.array([info.max, -info.max, info.tiny / 4, -0.0, 1.5], dtype), n)
        assert all_finite(x)
        for i in range(n):
            y = x.copy()
            y[i] = bad
            assert not all_finite(y), (n, i)


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arrays_all_finite_on_every_layout(dtype):
    """``_arrays.all_finite`` agrees with NumPy on C and Fortran order, strided views, read-only
    and integer arrays (the compiled pass takes C-contiguous writeable floats, NumPy the rest)."""
    layouts = [lambda a: a, np.asfortranarray, lambda a: a[:, ::2], lambda a: a.transpose(2, 0, 1),
               _read_only]
    for bad in (None, np.nan, np.inf):
        for layout in layouts:
            base = np.random.default_rng(3).standard_normal((6, 5, 4)).astype(dtype)
            if bad is not None:
                base[4, 2, 3] = bad            # inside every layout's view
            arr = layout(base)
            assert _arrays.all_finite(arr) is (bad is None), (bad, layout)
    assert _arrays.all_finite(np.zeros((0, 3), dtype)) is True
    assert _arrays.all_finite(np.arange(12)) is True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, ROWS + 1])
@pytest.mark.parametrize("I,P,joined", [(5, 7, True), (DEPTH + 2, 5, True), (DEPTH - 28, 40, False),
                                        (DEPTH, DEPTH, False), (0, 9, False), (100, 300, False)])
def test_step_product(dtype, B, I, P, joined):
    """The LSTM and RNN step's product from ``w_t = [W_ih^T; W_hh^T]`` (no bias: the cells add
    it): on the tiles ``[x_t, h] w_t``, bitwise one product over the rows side by side when
    that saves a pass, else bitwise ``x_t W_ih^T`` stored then ``h W_hh^T`` added; whatever
    ``a`` held before is not read (it starts as NaN here); with the BLAS never joined: ``x_t
    W_ih^T + h W_hh^T`` where ``I <= P`` and ``I + P <= BLAS_IN_STEP_MAX_K``, else ``h W_hh^T``
    alone (the layer made ``x W_ih^T`` first)."""
    assert saves_a_pass(I, P) == joined
    rng = np.random.default_rng(I * 1000 + P * 10 + B)
    G = 37
    x = rng.standard_normal((B, I)).astype(dtype)
    h = rng.standard_normal((B, P)).astype(dtype)
    w_t = rng.standard_normal((I + P, G)).astype(dtype)
    xh = np.full((B, I + P), np.nan, dtype)
    a = np.full((B, G), np.nan, dtype)
    w_ih, w_hh = np.ascontiguousarray(w_t[:I].T), np.ascontiguousarray(w_t[I:].T)
    prepared = prepare_step(w_ih, w_hh, np.empty((0, G), dtype), False)  # w_t: the BLAS's only
    assert prepared[:2] == (joined, False) and joins_step(I, P, False) == joined
    step_product(x, h, np.empty((0, G), dtype), prepared, xh, a, False)
    both = np.concatenate([x, h], axis=1).astype(np.float64)
    expected = both @ w_t
    scale = 1.0 + np.abs(both) @ np.abs(w_t.astype(np.float64))
    assert np.all(np.abs(a - expected) <= TOLERANCE[dtype] * (I + P) * scale)
    alone = np.full_like(a, np.nan)
    if joined:
        panel_matmul(both.astype(dtype), 0, prepare_panels(w_t, 0, I + P, 0, G), alone, 0, G,
                     False)
    else:
        panel_matmul(x, 0, prepare_panels(w_t[:I], 0, I, 0, G), alone, 0, G, False)
        panel_matmul(h, 0, prepare_panels(w_t[I:], 0, P, 0, G), alone, 0, G, True)
    assert np.array_equal(a, alone)

    a_blas = np.full((B, G), np.nan, dtype)
    prepared = prepare_step(w_ih, w_hh, w_t, True)
    first = not (I <= P and I + P <= BLAS_IN_STEP_MAX_K)
    assert prepared[:2] == (False, first) and projects_input_first(I, P, True) == first
    assert not projects_input_first(I, P, False)
    summed = step_product(x, h, w_t, prepared, xh, a_blas, True)
    assert summed == (not first)
    if summed:
        assert np.all(np.abs(a_blas - expected) <= TOLERANCE[dtype] * (I + P) * scale)
    else:
        recurrent = h.astype(np.float64) @ w_t[I:]
        assert np.all(np.abs(a_blas - recurrent) <= TOLERANCE[dtype] * max(P, 1)
                      * (1.0 + np.abs(h) @ np.abs(w_t[I:].astype(np.float64))))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("I", [5, DEPTH + 3])
def test_gru_step_makes_the_input_product_the_product_before_the_loop_makes(dtype, I,
                                                                              reset_after):
    """On the tiles a GRU step makes its ``x_t W_ih^T`` into its row of the gates (``xw`` given
    as ``(T, B, 0)``): every record and state is bitwise what the same loop gives from ``xw``
    made first over all ``T * B`` rows (one or two passes of ``k``), for a batch of a full,
    a short and a one-row block of the tiles, in training (the gates a ``(T, B, 3H)`` record)
    and in inference (one step's scratch)."""
    from lstm_np.kernels.gru import gru_forward
    rng = np.random.default_rng(I + 3 * reset_after)
    T, B, H = 4, ROWS + SHORT_ROWS + 1, 11
    x = rng.standard_normal((T, B, I)).astype(dtype)
    w_ih = rng.standard_normal((3 * H, I)).astype(dtype)
    w_hh = rng.standard_normal((3 * H, H)).astype(dtype)
    b_ih, b_hh = (rng.standard_normal(3 * H).astype(dtype) for _ in range(2))
    lengths = np.array([T] * (B - 2) + [2, 3])
    xw = np.empty((T, B, 3 * H), dtype)
    panel_matmul(x.reshape(T * B, I), 0, prepare_transposed(w_ih, w_ih[:, :0], 0, 3 * H),
                 xw.reshape(T * B, 3 * H), 0, 3 * H, False)
    expected = x.astype(np.float64) @ w_ih.T
    assert np.allclose(xw, expected, rtol=0, atol=TOLERANCE[dtype] * I * 10)
    for steps in (T, 1):                           # training's record, inference's scratch
        runs = []
        for made_first in (True, False):
            gates = xw.copy() if made_first and steps == T else np.empty((steps, B, 3 * H),
                                                                         dtype)
            h_seq = np.zeros((T + 1, B, H), dtype)
            h_seq[0] = rng.standard_normal((B, H)) if not runs else runs[0][1][0]
            hn = np.empty((steps, B, H), dtype)
            given = (gates if steps == T else xw) if made_first else xw[:, :, :0]
            gru_forward(x, w_ih, given, b_ih, w_hh, np.empty((0, 3 * H), dtype), b_hh,
                        reset_after, lengths, False, False, gates, h_seq, hn,
                        np.empty((B, 3 * H), dtype), False, 0, B)
            runs.append((gates, h_seq, hn))
        for first, in_step in zip(*runs):
            assert np.array_equal(first, in_step)
