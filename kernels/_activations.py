"""exp, sigmoid and tanh written so that LLVM vectorises the gate loops.

Numba's ``math.exp``/``math.tanh`` call libm one element at a time (~20 ns each here), which made
the element-wise gate math cost three times the recurrent matrix product. These versions are
branch-free arithmetic (range reduction, a polynomial, and building ``2^n`` from its bits), so a
loop over a row of gates runs in SIMD registers. Accuracy (tested in tests/test_activations.py
against numpy over the whole float64 range): a few ulp, also for tiny arguments (``tanh`` is
computed through ``expm1``, so ``tanh(1e-10)`` keeps full relative precision). NaN propagates,
overflow saturates (sigmoid to 0/1, tanh to +-1).

``sigmoid`` and ``tanh`` have a float32 version, chosen by the argument's type inside compiled
code: float32 arithmetic throughout (twice the SIMD lanes, a shorter polynomial), accurate to a
few float32 ulp (tested: sigmoid <= 2.5, tanh <= 3). Plain Python (``NUMBA_DISABLE_JIT=1``) runs
the float64 versions.

Method (as in musl/glibc ``exp``): ``y = n ln2 + r`` with ``|r| <= ln2 / 2`` found by adding a
shifter (``1.5 * 2^52``; float32: ``1.5 * 2^23``), ``expm1(r)`` by its Taylor series (to ``r^13``,
truncation < 5e-18, by Estrin's scheme; float32: to ``r^7``, < 1.2e-7 relative, coefficients in
pairs, the pairs by Horner in ``r^2``; both for short dependency chains), and ``2^n`` from the bits
``(n + 1023) << 52`` (float32: ``(n + 127) << 23``).
"""
import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

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
    def _bitcast(source, target, llvm_target, doc):
        """An intrinsic reinterpreting the bits of a ``source`` value as ``target`` (free: a
        register move)."""
        @intrinsic
        def cast(typingctx, value):
            def codegen(context, builder, signature, args):
                return builder.bitcast(args[0], llvm_target)
            return target(source), codegen
        cast.__doc__ = doc
        return cast

    _bits_of = _bitcast(types.float64, types.int64, ir.IntType(64),
                        "The IEEE bits of a float64 as an int64.")
    _float_of_bits = _bitcast(types.int64, types.float64, ir.DoubleType(),
                              "The float64 whose IEEE bits are the int64 ``i``.")
    _bits_of32 = _bitcast(types.float32, types.int32, ir.IntType(32),
                          "The IEEE bits of a float32 as an int32.")
    _float32_of_bits = _bitcast(types.int32, types.float32, ir.FloatType(),
                                "The float32 whose IEEE bits are the int32 ``i``.")

@jit
def _exp_parts(y):
    """``(s, q)`` with ``exp(y) = s * (1 + q)``, ``s = 2^n`` exact and ``q = expm1(r)``.

    ``y`` is clamped to ``[-708, 709]`` (NaN passes through untouched)."""
    if y > 709.0:
        y = 709.0
    return _exp_parts_below(y)


@jit
def _exp_parts_below(y):
    """:func:`_exp_parts` for ``y <= 709`` (or NaN), which needs only the lower clamp: what
    sigmoid and tanh take (``-|x|``, ``-2|x|``). The clamp is written as ``max(-708, y)`` with
    NaN passing, which compiles to one instruction (the two clamps took five); 3-16 % of a
    sigmoid's or tanh's time here, bitwise the same results."""
    y = float(y)
    y = -708.0 if -708.0 > y else y
    kd = y * _INV_LN2 + _SHIFT
    n_bits = _bits_of(kd) - _SHIFT_BITS
    n = kd - _SHIFT
    r = (y - n * _LN2_HI) - n * _LN2_LO
    # r + r^2 (1/2! + r/3! + ... + r^11/13!) by Estrin's scheme: the coefficients in pairs
    # (a_k), the pairs in pairs by r^2 (b_k), those by r^4: a chain of five dependent
    # multiply-adds instead of Horner's twelve, so more of a vectorised loop's iterations overlap
    r2 = r * r
    r4 = r2 * r2
    a1 = 1.0 / 2 + r * (1.0 / 6)
    a2 = 1.0 / 24 + r * (1.0 / 120)
    a3 = 1.0 / 720 + r * (1.0 / 5040)
    a4 = 1.0 / 40320 + r * (1.0 / 362880)
    a5 = 1.0 / 3628800 + r * (1.0 / 39916800)
    a6 = 1.0 / 479001600 + r * (1.0 / 6227020800)
    p = (a1 + r2 * a2) + r4 * ((a3 + r2 * a4) + r4 * (a5 + r2 * a6))
    q = r + r2 * p
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
def _sigmoid64(x):
    """``1 / (1 + e^-x)``, computed from ``e^-|x|`` so neither side overflows."""
    s, q = _exp_parts_below(-abs(x))
    e = s * q + s                       # e^-|x|
    num = 1.0 if x >= 0.0 else e
    return num / (1.0 + e)


@jit
def _tanh64(x):
    """``tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|))`` with the sign of ``x``."""
    s, q = _exp_parts_below(-2.0 * abs(x))
    e = s * q + (s - 1.0)               # expm1(-2|x|)
    t = -e / (2.0 + e)
    return t if x >= 0.0 else -t


# ----------------------------------------------------------------------------- float32
_F = np.float32
_SHIFT32 = _F(12582912.0)             # 1.5 * 2^23
_SHIFT32_BITS = np.int32(0x4B400000)
_INV_LN2_32 = _F(1.44269504)
_LN2_HI_32 = _F(0.693359375)          # 355 / 512: n * _LN2_HI_32 is exact for |n| < 2^15
_LN2_LO_32 = _F(-2.12194440e-4)
_ONE32, _TWO32, _HALF32 = _F(1.0), _F(2.0), _F(0.5)
_C3, _C4, _C5, _C6, _C7 = _F(1 / 6), _F(1 / 24), _F(1 / 120), _F(1 / 720), _F(1 / 5040)
_LO32 = _F(-87.0)
_BIAS32, _SHIFT_MANT = np.int32(127), np.int32(23)


@jit
def _exp_parts32(y):
    """float32 :func:`_exp_parts_below` for ``y <= 0`` (or NaN; what sigmoid and tanh take):
    ``y`` clamped below at -87, ``(s, q)`` in float32."""
    y = _LO32 if _LO32 > y else y
    kd = y * _INV_LN2_32 + _SHIFT32
    n_bits = np.int32(_bits_of32(kd) - _SHIFT32_BITS)
    n = kd - _SHIFT32
    r = (y - n * _LN2_HI_32) - n * _LN2_LO_32
    r2 = r * r                                  # pairs by Horner in r^2
    q = r + r2 * ((_HALF32 + r * _C3) + r2 * ((_C4 + r * _C5) + r2 * (_C6 + r * _C7)))
    s = _float32_of_bits(np.int32((n_bits + _BIAS32) << _SHIFT_MANT))
    return s, q


@jit
def _sigmoid32(x):
    s, q = _exp_parts32(-abs(x))
    e = s * q + s
    num = _ONE32 if x >= _F(0.0) else e
    return num / (_ONE32 + e)


@jit
def _tanh32(x):
    s, q = _exp_parts32(_F(-2.0) * abs(x))
    e = s * q + (s - _ONE32)
    t = -e / (_TWO32 + e)
    return t if x >= _F(0.0) else -t


# ----------------------------------------------------------------------------- by type
def sigmoid(x):
    """``1 / (1 + e^-x)``; in compiled code a float32 argument takes the float32 version."""
    return _sigmoid64(x)


def tanh(x):
    """``tanh(x)``; in compiled code a float32 argument takes the float32 version."""
    return _tanh64(x)


if not numba.config.DISABLE_JIT:
    @overload(sigmoid, jit_options={"error_model": "numpy"})
    def _sigmoid_by_type(x):
        if x == types.float32:
            return lambda x: _sigmoid32(x)
        return lambda x: _sigmoid64(x)

    @overload(tanh, jit_options={"error_model": "numpy"})
    def _tanh_by_type(x):
        if x == types.float32:
            return lambda x: _tanh32(x)
        return lambda x: _tanh64(x)


__all__ = ["exp", "expm1", "sigmoid", "tanh"]
