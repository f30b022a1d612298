"""lstm_np's own threads: blocks of rows in parallel.

The rows of a batch never meet inside a recurrent layer: row ``b``'s state depends only on row
``b``'s inputs. So a layer's whole time loop can run as ``n`` independent loops over ``n``
blocks of rows, one per thread, each with its own per-step products and gate math. That puts
the gate math on every core (a multi-threaded BLAS only spreads the products, and meets at a
barrier every step). The compiled time loops hold no GIL and call the BLAS themselves
(:mod:`lstm_np.kernels._blas`), so the blocks run side by side from the first step to the last.
The large products around the loops (input projection, weight gradients) are split the same
way, by blocks of rows of their result; the input gradient is made in the backward loops.

With ``n > 1`` lstm_np owns the cores: NumPy's OpenBLAS is set to one thread (one per caller)
until :func:`set_num_threads` goes back to 1, which restores it. Two reasons, both measured on
a 2-core machine: two callers asking one BLAS for all its threads wait for each other, and an
idle OpenBLAS worker spins for a while after every multi-threaded product, on the core an lstm_np
thread needs (a training step took 39 ms on one thread, 61 ms on two next to a 2-thread BLAS,
34 ms on two with OpenBLAS's spinning cut short).

If NumPy's BLAS is raised again afterwards (``threadpoolctl`` or the like, while lstm_np runs
several threads), the first parallel call after it warns (:class:`RuntimeWarning`): two
threads ran slower than one that way. ``set_num_threads(n)`` called again takes it back.

The default is one thread: nothing is spawned, NumPy's BLAS setting is left alone.
"""
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .kernels import _blas

#: a block of a batch has at least this many rows; a smaller batch runs as one block
MIN_ROWS_PER_BLOCK = 4
#: a block of a product has at least this much work: multiply-adds times the element size.
#: Handing a block to the other thread costs tens of microseconds on a VM (measured on a 2-core
#: Xeon: ``(800, 16) @ (16, 64)`` took 12 us on one thread and 75 us in two blocks); two blocks
#: paid off from about 2^25 bytes of work each there: float32 ``(800, 64) @ (64, 256)`` 1.04 of
#: one thread's time (2^24.6 a block), ``(3200, 32) @ (32, 512)`` 0.64; float64 ``(800, 16) @
#: (16, 256)`` 1.06 (2^25.6), ``(800, 64) @ (64, 256)`` 0.69.
MIN_PRODUCT_BYTES_PER_BLOCK = 1 << 25
#: a block of a time loop has at least this much work per step: multiply-adds of its rows
#: against the step's weights times the element size (float64 counts twice: its multiply-adds
#: and gate math take about twice as long). Below it, handing a block to the other thread
#: costs more than it saves: measured on a 2-core Xeon (T = 100, two threads' time over one
#: thread's, inference / training), an RNN at (B, I, H) = (8, 16, 64) 2.21 / 2.24 (float32) and
#: 1.66 / 1.56 (float64), a GRU 1.27 / 1.33 and 0.95 / 1.06, an LSTM 0.95 / 1.10 (float32,
#: 2^18.3 here per block of 4 rows) and 0.75 / 0.92 (float64, 2^19.3); an RNN at (8, 32, 128)
#: 1.37 / 1.29 (2^18.3), at (16, 32, 128) 0.97 / 0.99 (2^19.3), at (32, 32, 128) 0.76 / 0.87.
MIN_STEP_BYTES_PER_BLOCK = 1 << 19

_num_threads = 1
_executor = None
_lock = threading.Lock()
_blas_threads = None     # NumPy's BLAS setting before lstm_np took the cores


def get_num_threads():
    """The number of threads lstm_np runs blocks of a batch's rows in (1 by default)."""
    return _num_threads


def set_num_threads(n):
    """Run lstm_np's work in up to ``n`` threads (the calling thread and ``n - 1`` workers):
    the time loops of a batch in blocks of rows (of at least ``MIN_ROWS_PER_BLOCK`` rows and
    ``MIN_STEP_BYTES_PER_BLOCK`` of work per step each: a small layer runs in one), and the
    large products around them in blocks of rows of their result.

    ``n``: an int from 1 to ``os.cpu_count()``. With ``n > 1`` NumPy's BLAS runs one thread per
    caller until ``set_num_threads(1)`` (see the module docstring); set NumPy's own threads
    (threadpoolctl, ``OPENBLAS_NUM_THREADS``) before this call, not after: a BLAS raised again
    leaves its idle workers spinning on the cores these threads need (measured: a float32 LSTM's
    forward at ``(B, I, H) = (64, 64, 256)`` took 36.6 ms on two threads that way, 18.6 ms in
    this order, 35.4 ms on one thread); a parallel call warns when it finds NumPy's BLAS
    raised, and calling this again takes it back to one thread (the raised number is the one
    given back at ``set_num_threads(1)``). The results are those of one thread up to the last
    bits of float32 products (the BLAS's float32 kernel may order a row's sum differently for
    a different number of rows; in float64 too where a weight gradient's product is split into
    blocks of one or two rows, as a ``proj_size`` layer's ``weight_hr`` may be); float64 and
    the small-batch loops are otherwise bitwise the same. It may be called while other threads
    are inside lstm_np: a call already running finishes its blocks in its own thread where the
    old pool is gone.
    """
    global _num_threads, _executor, _blas_threads
    cpus = os.cpu_count() or 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= cpus:
        raise ValueError(f"set_num_threads: expected an int from 1 to {cpus} (the number of "
                         f"CPUs), got {n!r}")
    if n > 1 and not _blas.FOUND:
        raise RuntimeError("set_num_threads: threads need the compiled loops to call NumPy's "
                           "BLAS, and NumPy's BLAS here is not the OpenBLAS of NumPy's wheels; "
                           "lstm_np runs on one thread (NumPy's BLAS still uses its threads)")
    with _lock:
        if n > 1:                       # also when n is the number already set (see above)
            previous = _blas.set_threads(1)
            if _num_threads == 1 or previous != 1:   # the setting to give back: NumPy's own,
                _blas_threads = previous              # or what it was raised to since
        elif _num_threads > 1:
            _blas.set_threads(_blas_threads)
        if n == _num_threads:
            return
        if _executor is not None:
            _executor.shutdown(wait=True)
        _executor = ThreadPoolExecutor(n - 1, thread_name_prefix="lstm_np") if n > 1 else None
        _num_threads = n


def _warn_if_blas_raised():
    """Warn when NumPy's BLAS runs more than one thread beside lstm_np's threads (it was raised
    after :func:`set_num_threads`). Both read under the lock that :func:`set_num_threads` holds
    while it changes them: a call whose blocks were cut just before another thread went back
    to one thread (and gave NumPy its threads back) is not warned."""
    with _lock:
        blas = _blas.get_threads() if _num_threads > 1 else None
    if blas is not None and blas > 1:
        warnings.warn(
            f"NumPy's BLAS runs {blas} threads beside lstm_np's {_num_threads}: its idle workers "
            f"spin on the cores lstm_np's threads need (two threads ran slower than one so). Set "
            f"NumPy's threads (threadpoolctl, OPENBLAS_NUM_THREADS) before "
            f"lstm_np.set_num_threads, or call lstm_np.set_num_threads({_num_threads}) again "
            f"after, which sets NumPy's BLAS back to one thread", RuntimeWarning, stacklevel=2)


def row_blocks(rows, min_rows=MIN_ROWS_PER_BLOCK):
    """Rows ``0 .. rows-1`` as at most :func:`get_num_threads` contiguous blocks of at least
    ``min_rows`` rows: ``[(r0, r1), ..]``, ``[(0, rows)]`` when there is one."""
    if _num_threads == 1:
        return [(0, rows)]
    n = max(1, min(_num_threads, rows // max(1, min_rows)))
    edges = [rows * k // n for k in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def in_blocks(run, blocks):
    """``run(r0, r1)`` for every block: the first in the calling thread, the others in the
    pool. Waits for every block; then raises the first block's exception, if any.

    A block the pool cannot take (another thread called :func:`set_num_threads` since
    ``blocks`` were cut, and the pool is gone or shut down) runs in the calling thread: blocks
    are independent, so the results are the same."""
    if len(blocks) == 1:
        run(*blocks[0])
        return
    _warn_if_blas_raised()
    executor = _executor
    futures, here = [], [blocks[0]]
    for block in blocks[1:]:
        try:
            futures.append(executor.submit(run, *block))
        except (AttributeError, RuntimeError):      # no pool (None), or shut down
            here.append(block)
    errors = []
    try:
        for block in here:
            try:
                run(*block)
            except Exception as error:              # the other blocks still run
                errors.append(error)
    finally:                                        # the pool's blocks end before we return
        errors += [e for e in (f.exception() for f in futures) if e is not None]
    if errors:
        raise errors[0]


def product_blocks(rows, row_bytes):
    """:func:`row_blocks` for a product whose result rows each take ``row_bytes`` of work
    (multiply-adds times the element size): blocks of at least
    ``MIN_PRODUCT_BYTES_PER_BLOCK``."""
    return row_blocks(rows, -(-MIN_PRODUCT_BYTES_PER_BLOCK // max(1, row_bytes)))


def step_blocks(rows, row_step_bytes):
    """:func:`row_blocks` for a time loop whose step costs ``row_step_bytes`` per row
    (multiply-adds times the element size): blocks of at least ``MIN_STEP_BYTES_PER_BLOCK``
    and ``MIN_ROWS_PER_BLOCK`` rows."""
    need = -(-MIN_STEP_BYTES_PER_BLOCK // max(1, row_step_bytes))
    return row_blocks(rows, max(MIN_ROWS_PER_BLOCK, need))


def _numpy_matmul(a, b, out):
    np.matmul(a, b, out=out)


def matmul(a, b, out, product=None):
    """``out = a @ b`` for 2-D arrays, rows of ``a`` (and ``out``) in parallel blocks, each
    block by ``product(a_rows, b, out_rows)`` (``None``: NumPy's matmul)."""
    product = product or _numpy_matmul
    blocks = product_blocks(a.shape[0], a.shape[1] * b.shape[1] * a.itemsize)
    if len(blocks) == 1:        # no closure and no row views: 3-5 % of a T = 1 RNN call
        product(a, b, out)
        return out

    def run(r0, r1):
        product(a[r0:r1], b, out[r0:r1])
    in_blocks(run, blocks)
    return out
