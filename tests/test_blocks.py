"""The kernels' own row-major product (``matmul_add``) and float64 row sums, against float64
NumPy, over every remainder of their unrolled loops and sub-ranges of the operands."""
import numpy as np
import pytest

from lstm_np.kernels._blocks import add_rows_f64, matmul_add

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
def test_add_rows_f64_sums_in_float64(dtype):
    """Every term is added in float64: 10^5 rows of ``1 + 2^-20`` (exact in float32) plus one
    row of ``2^24`` sum to the float64 answer, which a float32 running sum loses entirely."""
    x = np.full((100_001, 3), 1.0 + 2.0 ** -20, dtype)
    x[0] = 2.0 ** 24
    total = np.zeros(3)
    add_rows_f64(x, total)
    assert np.array_equal(total, np.full(3, 2.0 ** 24 + 100_000 * (1.0 + 2.0 ** -20)))
