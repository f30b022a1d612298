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
"""
import sys
import threading

import numpy as np

MIN_BYTES = 1 << 16
MAX_POOLED_BYTES = 1 << 30

_lock = threading.Lock()
_pool = {}                 # nbytes -> [1-D uint8 buffers]
_pooled_bytes = 0


def _refs_when_free():
    """The reference count :func:`_free_index` sees for a buffer nothing else uses: the list's
    own reference and the call's argument, measured in the same expression so that it holds for
    this interpreter's way of counting."""
    probe = [np.empty(1, np.uint8)]
    return sys.getrefcount(probe[0])


def _free_index(buffers):
    """Index of the first buffer in ``buffers`` that no array uses, or -1."""
    for i in range(len(buffers)):
        if sys.getrefcount(buffers[i]) == _FREE_REFS:
            return i
    return -1


_FREE_REFS = _refs_when_free()


def empty(shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, as ``np.empty``, from
    reused memory when it is large enough to matter."""
    global _pooled_bytes
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        buffers = _pool.setdefault(nbytes, [])
        i = _free_index(buffers)
        if i >= 0:
            return buffers[i].view(dtype).reshape(shape)
        buffer = np.empty(nbytes, np.uint8)
        if _pooled_bytes + nbytes > MAX_POOLED_BYTES:
            _drop_unused()
            buffers = _pool.setdefault(nbytes, [])     # the empty list may have gone
        if _pooled_bytes + nbytes <= MAX_POOLED_BYTES:
            buffers.append(buffer)
            _pooled_bytes += nbytes
        return buffer.view(dtype).reshape(shape)


def _drop_unused():
    """Forget every pooled buffer that no array uses (caller holds the lock)."""
    global _pooled_bytes
    for nbytes in list(_pool):
        buffers = _pool[nbytes]
        while (i := _free_index(buffers)) >= 0:
            del buffers[i]
            _pooled_bytes -= nbytes
        if not buffers:
            del _pool[nbytes]



def release_memory():
    """Give back the memory lstm_np keeps for reuse between calls (after training a large model,
    say): every pooled buffer no array uses is dropped. Arrays still in use (a tape, an output,
    a gradient the caller holds) keep theirs. Returns the number of bytes dropped."""
    with _lock:
        before = _pooled_bytes
        _drop_unused()
        return before - _pooled_bytes
