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
