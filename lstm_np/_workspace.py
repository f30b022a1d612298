"""Reused memory for the large per-call arrays: the tape, the gradients, the outputs.

A training step allocates the same dozen ``(T, B, .)`` arrays every time. From the C library
these come back as fresh pages when the heap has been trimmed in between, and every first touch
of a page is a page fault: measured here, 2,246 faults and about a fifth of a float32 LSTM
training step at ``(B, I, H) = (32, 32, 128)`` (benchmarks/RESULTS.md).

:func:`empty` hands out views of buffers kept in a process-wide pool. A buffer is handed out
again only when no array made from it is alive any more: every view of a NumPy array holds a
reference to the buffer that owns the memory, so the buffer's reference count says whether
anything (a tape, a ``y`` the caller kept, a gradient) still uses it. Nothing the caller holds
is ever overwritten. Arrays under ``MIN_BYTES`` come from ``np.empty`` (the C library serves
those without faults). The pool holds at most ``MAX_POOLED_BYTES``: a new size that does not fit
first drops the buffers nothing uses (those of shapes no longer run), then, if it still does
not fit, is served by plain ``np.empty``.

Pooled arrays start on a cache line (:data:`LINE`). NumPy's large arrays start 16 bytes past
one (the C library's header), and then every 64-byte (AVX-512) load and store of a row
straddles two lines: in the register tiles' output rows and in every loop of gate math. The
layers' one-step scratch of inference comes from here too. Measured here, old and new code
alternating call by call (one thread, bitwise the same results; the panels on cache lines too,
:func:`lstm_np.kernels._tiles._zeros_on_lines`), four runs: float32 LSTM inference 0.93-1.00
of the time at ``(B, I, H) = (64, 64, 256)``, 0.94-1.01 at ``(128, 128, 512)``, 0.93-1.02 at
``(32, 32, 128)``; float64 0.93 at ``(64, 64, 256)``; training 0.96 and 0.98 (the spread is the
old code's: where its scratch landed changed from call to call). A ``T = 1`` call makes its
scratch arrays (three in an LSTM, two in a GRU) through :func:`empty`: about 0.7 us more, 1-4 %
of such a call.

Copies are placed against 4K aliasing (:func:`copy`): a CPU takes a load whose address matches
an earlier store's in the low 12 bits as depending on it, so a copy whose destination sits a
few bytes past its source modulo 4096 stalls on every load. Measured here, copying a
``(100, 8, 64)`` float64 array took 160-200 us with the destination 8, 16 or 24 bytes past the
source modulo 4096, and 15 us with both at the same offset. The caller's arrays land anywhere,
so every pooled buffer has ``ALIGN_SLACK`` spare bytes, and a copy starts its view at the
source's offset modulo 4096 (where that offset is not aligned for the dtype: on a cache line).
"""
import math
import sys
import threading

import numpy as np

from .kernels._tiles import LINE    # the bytes of a cache line, which the kernels' panels start on

MIN_BYTES = 1 << 16
MAX_POOLED_BYTES = 1 << 30
#: spare bytes at the end of every pooled buffer, room to place a copy (:func:`copy`)
ALIGN_SLACK = 4096

_lock = threading.Lock()
_pool = {}                 # nbytes -> [(1-D uint8 buffer, its address)]
_pooled_bytes = 0


def _refs_when_free():
    """The reference count :func:`_free_index` sees for a buffer nothing else uses: the pool
    entry's own reference and the call's argument, measured in the same expression so that it
    holds for this interpreter's way of counting."""
    probe = [(np.empty(1, np.uint8), 0)]
    return sys.getrefcount(probe[0][0])


def _free_index(entries):
    """Index of the first ``(buffer, address)`` entry in ``entries`` whose buffer no array
    uses, or -1."""
    for i in range(len(entries)):
        if sys.getrefcount(entries[i][0]) == _FREE_REFS:
            return i
    return -1


_FREE_REFS = _refs_when_free()


def empty(shape, dtype, offset_like=None):
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, as ``np.empty``, from
    reused memory when it is large enough to matter.

    ``offset_like``: an array whose address modulo 4096 the result's should share (the source
    or destination of a copy, see the module docstring); ``None``: a pooled array starts a
    cache line (a smaller one is NumPy's, 16 bytes past one)."""
    global _pooled_bytes
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        entries = _pool.setdefault(nbytes, [])
        i = _free_index(entries)
        if i >= 0:
            return _placed(entries[i], dtype, shape, offset_like)
        buffer = np.empty(nbytes + ALIGN_SLACK, np.uint8)
        entry = (buffer, buffer.ctypes.data)
        if _pooled_bytes + buffer.nbytes > MAX_POOLED_BYTES:
            _drop_unused()
            entries = _pool.setdefault(nbytes, [])     # the empty list may have gone
        if _pooled_bytes + buffer.nbytes <= MAX_POOLED_BYTES:
            entries.append(entry)
            _pooled_bytes += buffer.nbytes
        return _placed(entry, dtype, shape, offset_like)


def _placed(entry, dtype, shape, offset_like):
    """The ``shape`` array of ``dtype`` in the ``(buffer, address)`` ``entry``, at the offset of
    ``offset_like`` modulo 4096 when that keeps it aligned for ``dtype``, else on the buffer's
    first cache line. The buffer's address is kept with it: NumPy's ``.ctypes.data`` takes
    about 1 us (Python code in NumPy), more than the rest of a hand-out."""
    buffer, address = entry
    start = -address % LINE
    if offset_like is not None:
        placed = (offset_like.ctypes.data - address) % ALIGN_SLACK
        if placed % dtype.alignment == 0:
            start = placed
    return np.ndarray(shape, dtype, buffer, start)


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array whose first element starts a cache line (NumPy's own
    small arrays start on 16 bytes, and then every other 32-byte AVX2 load or store of a row
    straddles two lines): the streams' flat buffers (weights first), made once and stepped
    many times, whatever their size.

    Measured here, old and new code alternating: a streaming step took 0.89-0.95 of the time
    at (I, H) = (32, 128) in all three cells and both dtypes (in a compiled loop, LSTM float32:
    4.7 against 5.9-6.7 us); at NumPy's 16 bytes it depended on where the buffer landed. Not
    used per call: for the layers' small per-call scratch the extra Python cost more (T = 1
    calls 10-25 % slower) than the aligned rows gained (nothing measurable at B <= 32)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buffer = np.empty(nbytes + LINE, np.uint8)
    return _placed((buffer, buffer.ctypes.data), dtype, shape, None)


def copy(a):
    """A C-contiguous copy of ``a`` in reused memory, placed at ``a``'s offset modulo 4096 (no
    4K aliasing between the copy's loads and stores)."""
    out = empty(a.shape, a.dtype, offset_like=a)
    np.copyto(out, a)
    return out


def _drop_unused():
    """Forget every pooled buffer that no array uses (caller holds the lock)."""
    global _pooled_bytes
    for nbytes in list(_pool):
        entries = _pool[nbytes]
        while (i := _free_index(entries)) >= 0:
            _pooled_bytes -= entries[i][0].nbytes
            del entries[i]
        if not entries:
            del _pool[nbytes]



def release_memory():
    """Give back the memory lstm_np keeps for reuse between calls (after training a large model,
    say): every pooled buffer no array uses is dropped. Arrays still in use (a tape, an output,
    a gradient the caller holds) keep theirs. Returns the number of bytes dropped."""
    with _lock:
        before = _pooled_bytes
        _drop_unused()
        return before - _pooled_bytes
