"""exp, sigmoid and tanh written so that LLVM vectorises the gate loops.

Numba's ``math.exp``/``math.tanh`` call libm one element at a time (~20 ns each here), which made
the element-wise gate math cost three times the recurrent matrix product. These versions are
branch-free arithmetic (range reduction, a polynomial, and building ``2^n`` from its bits), so a
loop over a row of gates runs in SIMD registers. Accuracy (tested in tests/test_activations.py
against numpy over the whole float64 range): a few ulp, also for tiny arguments (``tanh`` is
computed through ``expm1``, so ``tanh(1e-10)`` keeps full relative precision). NaN propagates,
overflow saturates (sigmoid to 0/1, tanh to +-1), and float32 inputs are computed in float64.

Method (as in musl/glibc ``exp``): ``y = n ln2 + r`` with ``|r| <= ln2 / 2`` found by adding a
shifter ``1.5 * 2^52``, ``expm1(r)`` by its Taylor series to ``r^13`` (truncation < 5e-18), and
``2^n`` from the bits ``(n + 1023) << 52``.
"""
import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from ._jit import jit

_SHIFT = 6755399441055744.0           # 1.5 * 2^52: adding it rounds to an integer in the low bits
_SHIFT_BITS = 0x4338000000000000      # the bits of _SHIFT
_INV_LN2 = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10

if numba.config.DISABLE_JIT:          # plain Python: reinterpret the bits through numpy scalars
    def _bits_of(x):
        return int(np.float64(x).view(np.int64))

    def _float_of_bits(i):
        i = (int(i) + 2 ** 63) % 2 ** 64 - 2 ** 63       # wrap like int64 arithmetic does
        return float(np.int64(i).view(np.float64))
else:
    @intrinsic
    def _bits_of(typingctx, x):
        """The IEEE bits of a float64 as an int64 (a free register reinterpretation)."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(64))
        return types.int64(types.float64), codegen

    @intrinsic
    def _float_of_bits(typingctx, i):
        """The float64 whose IEEE bits are the int64 ``i``."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.DoubleType())
        return types.float64(types.int64), codegen


@jit
def _exp_parts(y):
    """``(s, q)`` with ``exp(y) = s * (1 + q)``, ``s = 2^n`` exact and ``q = expm1(r)``.

    ``y`` is clamped to ``[-708, 709]`` (NaN passes through untouched)."""
    y = float(y)
    if y > 709.0:
        y = 709.0
    if y < -708.0:
        y = -708.0
    kd = y * _INV_LN2 + _SHIFT
    n_bits = _bits_of(kd) - _SHIFT_BITS
    n = kd - _SHIFT
    r = (y - n * _LN2_HI) - n * _LN2_LO
    q = r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
        1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
            1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600 + r * (
                1.0 / 6227020800)))))))))))))
    s = _float_of_bits((n_bits + 1023) << 52)
    return s, q


@jit
def exp(y):
    """``e^y`` (saturates at ``e^709``; ``0`` is returned as ``e^-708``, about 3e-308)."""
    s, q = _exp_parts(y)
    return s * q + s


@jit
def expm1(y):
    """``e^y - 1``, accurate for tiny ``y``."""
    s, q = _exp_parts(y)
    return s * q + (s - 1.0)


@jit
def sigmoid(x):
    """``1 / (1 + e^-x)``, computed from ``e^-|x|`` so neither side overflows."""
    e = exp(-abs(x))
    num = 1.0 if x >= 0.0 else e
    return num / (1.0 + e)


@jit
def tanh(x):
    """``tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|))`` with the sign of ``x``."""
    e = expm1(-2.0 * abs(x))
    t = -e / (2.0 + e)
    return t if x >= 0.0 else -t


__all__ = ["exp", "expm1", "sigmoid", "tanh"]
