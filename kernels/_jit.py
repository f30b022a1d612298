"""The one place where Numba options are set.

``cache=True`` so a kernel compiles once per machine; ``nogil=True`` so callers may use
threads; ``error_model="numpy"`` so a division by zero gives inf/nan instead of raising (and lets
loops vectorise). No ``fastmath``: its no-NaN and no-Inf assumptions would let LLVM assume finite
values and delete the very overflow behaviour the gradient checks look at.
"""
import numba

jit = numba.njit(cache=True, nogil=True, error_model="numpy")
