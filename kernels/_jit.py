"""The one place where Numba options are set.

``cache=True`` so a kernel compiles once per machine; ``nogil=True`` so callers may use
threads; ``error_model="numpy"`` so a division by zero gives inf/nan instead of raising (and lets
loops vectorise). ``fastmath={"contract"}`` lets LLVM fuse a multiply and an add into one FMA
(one rounding instead of two: never less accurate, and the same on every run of one machine).
Never ``nnan``/``ninf``: they would let LLVM assume finite values and delete the very overflow
behaviour the gradient checks look at (and the finite check itself). ``reassoc`` makes sums
depend on the vector width, so only :data:`jit_any_order` has it, for the one sum whose value
cannot depend on the order of its terms.
"""
import numba

jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})

#: :data:`jit` without Numba's reference counting, for the functions that the time loops and
#: streaming steps call per step or per row: they take arrays, allocate none and make views of
#: them, and each view costs an atomic increment and decrement of its array's count (about 20
#: cycles each here), which per row added up to more than the row's arithmetic: an LSTM's gate
#: math at (B, H) = (8, 64) took 0.42 of the time without them in float32, 0.64 in float64; a
#: register tile of K = 16 (0.3 us) 0.4. Such a function must never hand an array it made to a
#: reference-counted caller (that caller would release what was never counted: tested in
#: tests/test_refcounts.py, and a crash when broken on purpose), only to another of these
#: (:func:`~.lstm.gate_blocks`). What it calls Numba compiles without counting too (the flag
#: is inherited), so these functions call only each other, scalar code and the tiles.
jit_borrowing = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"},
                           _nrt=False)

#: :data:`jit` plus ``reassoc``, for the one reduction whose result cannot depend on the order of
#: its terms (:func:`~._blocks.all_finite`: a sum of exact zeros, or NaN): LLVM vectorises a
#: reduction only when it may reorder it.
jit_any_order = numba.njit(cache=True, nogil=True, error_model="numpy",
                           fastmath={"contract", "reassoc"})


def compiled_for(kernel, *args):
    """``kernel`` compiled for the types of ``args``, callable without Numba's type dispatch.

    A dispatcher call looks up every argument's type first (about 0.15 us per array here); a
    streaming step that has already fixed every argument's dtype, layout and dimension can skip
    that. The caller must only ever pass arguments of exactly these types (nothing is checked).
    Falls back to ``kernel`` itself when it is plain Python (``NUMBA_DISABLE_JIT=1``) or Numba's
    internals differ from what this expects.
    """
    if not isinstance(kernel, numba.core.dispatcher.Dispatcher):
        return kernel
    signature = tuple(numba.typeof(a) for a in args)
    try:
        kernel.compile(signature)
        return kernel.overloads[signature].entry_point
    except (AttributeError, KeyError, TypeError):     # pragma: no cover - other Numba versions
        return kernel


def _wide_vectors_python():
    """Plain Python (``NUMBA_DISABLE_JIT=1``): nothing to do."""


def _wide_vectors_intrinsic():
    """The intrinsic behind :data:`wide_vectors`."""
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def wide_vectors(typingctx):
        def codegen(context, builder, signature, args):
            # llvmlite's attribute set takes only its list of keyword attributes; a string
            # attribute is written into the function's definition as it stands
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
            return context.get_dummy_value()
        return types.void(), codegen
    return wide_vectors


#: ``wide_vectors()``, called first thing in a compiled function, lets LLVM vectorise that
#: function's loops with 512-bit vectors where the CPU has AVX-512. For the CPUs that have it,
#: LLVM's CPU models carry the tuning ``prefer-256-bit`` (wider vectors once lowered some chips'
#: clock), so without it a loop of gate math runs at 256 bits; LLVM's function attribute
#: ``"prefer-vector-width"="512"`` overrides that for one function. Numba's CPU target sets no
#: such option itself, and setting ``NUMBA_CPU_FEATURES`` would change every Numba program of
#: the process. Nothing changes in the arithmetic (each element's operations are the same at
#: any width: tested bitwise in tests/test_activations.py); where the CPU has no AVX-512 the
#: attribute is clamped to its widest vectors. Measured on a 2-core AVX-512 Xeon (one thread):
#: a loop of tanh over 512 elements 0.78 of the time in float64, 0.86 in float32.
wide_vectors = _wide_vectors_python if numba.config.DISABLE_JIT else _wide_vectors_intrinsic()
