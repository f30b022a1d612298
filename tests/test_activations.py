"""The vectorisable exp/expm1/sigmoid/tanh of the kernels against numpy, in ulps, over the whole
float64 range, tiny arguments, and the special values."""
import numba
import numpy as np
import pytest
from numba import njit

from lstm_np.kernels import _activations as act
from lstm_np.kernels._jit import wide_vectors
from lstm_np.kernels._tiles import VECTOR_BYTES


@njit
def _apply(kind, x, out):
    for i in range(x.size):
        if kind == 0:
            out[i] = act.exp(x[i])
        elif kind == 1:
            out[i] = act.expm1(x[i])
        elif kind == 2:
            out[i] = act.sigmoid(x[i])
        else:
            out[i] = act.tanh(x[i])


def _sigmoid_reference(x):
    e = np.exp(-np.abs(x))       # correctly rounded to ~0.5 ulp, no cancellation on either side
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _reference(kind, x):
    with np.errstate(over="ignore"):
        return [np.exp, np.expm1, _sigmoid_reference, np.tanh][kind](x)


X = np.concatenate([np.linspace(-700, 700, 100001), np.geomspace(1e-300, 30, 20001),
                    -np.geomspace(1e-300, 30, 20001), np.random.default_rng(0).standard_normal(10000)])


@pytest.mark.parametrize("kind,max_ulps", [(0, 2), (1, 3), (2, 4), (3, 4)],
                         ids=["exp", "expm1", "sigmoid", "tanh"])
def test_accuracy_in_ulps(kind, max_ulps):
    out = np.empty_like(X)
    _apply(kind, X, out)
    ref = _reference(kind, X)
    ok = np.isfinite(ref) & (np.abs(ref) > 1e-290)
    ulps = np.abs(out[ok] - ref[ok]) / np.spacing(np.abs(ref[ok]))
    assert ulps.max() <= max_ulps, f"worst {ulps.max():.1f} ulp at x={X[ok][np.argmax(ulps)]}"


def test_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 800.0, -800.0, 0.0])
    out = np.empty_like(x)
    _apply(2, x, out)   # sigmoid
    assert np.isnan(out[0]) and out[1] == 1.0 and out[2] < 1e-300 and out[3] == 1.0 \
        and out[4] < 1e-300 and out[5] == 0.5
    _apply(3, x, out)   # tanh
    assert np.isnan(out[0]) and out[1] == 1.0 and out[2] == -1.0 and out[3] == 1.0 \
        and out[4] == -1.0 and out[5] == 0.0
    _apply(0, x, out)   # exp saturates instead of overflowing to inf
    assert np.isnan(out[0]) and np.isfinite(out[1]) and out[1] > 1e307 and out[2] < 1e-300


def test_tanh_keeps_relative_precision_for_tiny_arguments():
    x = np.array([1e-300, 1e-100, 1e-10, -1e-12])
    out = np.empty_like(x)
    _apply(3, x, out)
    assert np.all(np.abs(out - x) <= np.spacing(np.abs(x)))


@njit
def _apply32(kind, x, out):
    for i in range(x.size):
        if kind == 0:
            out[i] = act.sigmoid(x[i])
        else:
            out[i] = act.tanh(x[i])


X32 = np.concatenate([np.linspace(-90, 90, 200001), np.geomspace(1e-30, 20, 20001),
                      -np.geomspace(1e-30, 20, 20001)]).astype(np.float32)


@pytest.mark.parametrize("kind,max_ulps", [(0, 2.5), (1, 3)], ids=["sigmoid", "tanh"])
def test_float32_accuracy_in_float32_ulps(kind, max_ulps):
    """Compiled, a float32 argument takes the float32 versions (plain Python runs the float64
    ones, which pass the same bounds)."""
    out = np.empty_like(X32)
    _apply32(kind, X32, out)
    x64 = X32.astype(np.float64)
    ref = _sigmoid_reference(x64) if kind == 0 else np.tanh(x64)
    ok = np.abs(ref) > 1e-37
    ulps = np.abs(out[ok].astype(np.float64) - ref[ok]) / np.spacing(np.abs(ref[ok]).astype(np.float32))
    assert ulps.max() <= max_ulps, f"worst {ulps.max():.2f} ulp at x={X32[ok][np.argmax(ulps)]}"


#: the kernels' options (kernels._jit), without the on-disk cache
_kernel_jit = njit(nogil=True, error_model="numpy", fastmath={"contract"})


@_kernel_jit
def _gate_loops(x, s, t):
    for i in range(x.size):
        s[i] = act.sigmoid(x[i])
    for i in range(x.size):
        t[i] = act.tanh(x[i])


@_kernel_jit
def _gate_loops_wide(x, s, t):
    wide_vectors()
    for i in range(x.size):
        s[i] = act.sigmoid(x[i])
    for i in range(x.size):
        t[i] = act.tanh(x[i])


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="compares compiled loops of two vector "
                    "widths; as plain Python there are no vectors")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_vectors_change_no_bit(dtype):
    """``wide_vectors()`` asks LLVM for 512-bit vectors in the function that calls it (the
    attribute is in its IR, and where the CPU has AVX-512 its loops use zmm registers) and
    changes no bit of the gate math: sigmoid and tanh over the whole range, special values
    and a length that leaves a remainder after the vectors."""
    x = np.concatenate([X, [np.nan, np.inf, -np.inf, 0.0, -0.0]])[:-3].astype(dtype)
    narrow = [np.empty_like(x), np.empty_like(x)]
    wide = [np.empty_like(x), np.empty_like(x)]
    _gate_loops(x, *narrow)
    _gate_loops_wide(x, *wide)
    assert np.array_equal(narrow[0], wide[0], equal_nan=True)
    assert np.array_equal(narrow[1], wide[1], equal_nan=True)
    signature = _gate_loops_wide.signatures[-1]
    attribute = '"prefer-vector-width"="512"'
    assert attribute in _gate_loops_wide.inspect_llvm(signature)
    assert attribute not in _gate_loops.inspect_llvm(_gate_loops.signatures[-1])
    if VECTOR_BYTES == 64:
        assert "zmm" in _gate_loops_wide.inspect_asm(signature)
