r"""The per-step product of the time loops without the BLAS: a register-tiled matrix product.

``out[:, n0:n1] (+)= a[:, k0:k1] @ w[k0:k1, n0:n1]`` for one step's ``a (B, K)`` (``B`` a block
of batch rows) against weights ``w`` that stay the same for all ``T`` steps. So the weights are
repacked once per time loop (:func:`prepare_panels`): cut into panels of ``NT`` columns, each panel
``(K, NT)`` contiguous and the last one padded with zeros. Each step then runs
:func:`panel_matmul`, which computes ``ROWS x NT`` blocks of ``out`` in ``ROWS * VECTORS`` SIMD
registers while it walks down one panel: per ``k``, ``VECTORS`` loads of the panel, ``ROWS``
broadcasts of ``a`` and ``ROWS * VECTORS`` fused multiply-adds, and no load or store of ``out``.

Why not the loops LLVM vectorises (:func:`~._blocks.matmul_add`): those keep ``out`` in memory,
one load and store per row of ``w``, and reach 30-45 % of the FMA peak at ``B = 8``. Why not the
BLAS: it packs ``w`` again on every call, which at few rows costs as much as the product. Why
the panels: walking down a column block of the plain ``(K, N)`` weights jumps ``N * itemsize``
bytes per ``k``; at ``N * itemsize = 2-4 KiB`` every row lands in the same cache set and on a
new page (float64 at ``(32, 128, 512)``, one 4 x 2 tile: 12 GFLOP/s unpacked, 39 packed).

Measured on a 2-core AVX2 EPYC (1 thread, GFLOP/s, ``matmul_add`` -> tiles, the BLAS in
brackets; the panels packed beforehand, as the time loops do), float32: ``(B, K, N) = (8, 64,
256)`` 47 -> 69 (44); ``(8, 256, 64)`` 33 -> 68 (47); ``(32, 128, 512)`` 49 -> 77 (68);
``(64, 256, 1024)`` 38 -> 57 (61). float64: 18 -> 34 (22); 16 -> 35 (21); 19 -> 35 (28);
17 -> 35 (34). NumPy's own large matmul peaks at about 70 / 32 there. From 64 rows the BLAS's
larger blocks won there (the layers' ``blas_min_rows``; with AVX-512, from 512).

Vector width: 64-byte vectors (zmm) where the CPU has AVX-512, else 32 (:data:`VECTOR_BYTES`),
so a panel is 48 float32 or 24 float64 columns there. Measured on a 2-core AVX-512 Xeon
(GFLOP/s, one thread, 32-byte -> 64-byte tiles): float32 ``(8, 80, 256)`` 74 -> 118,
``(32, 128, 384)`` 87 -> 147, ``(16, 128, 512)`` 85 -> 116; float64 42 -> 55, 45 -> 61,
44 -> 57 (NumPy's large matmul there: 148 and 71); with the tiles called without a function
call each (see :func:`panel_matmul`) and 8 rows a tile (:data:`ROWS`), float32 173 at ``(64,
256, 1024)`` and 182 at ``(32, 128, 512)`` (OpenBLAS from the compiled loop: 119 and 108).
Wider panels leave more columns in a last, narrower panel, which :func:`_last_panel` gives a
tile of its own vectors.

Arithmetic: for every entry of ``out``, each pass of :data:`DEPTH` rows of ``k`` is one chain
of fused multiply-adds in the order ``k = kb, kb + 1, ..`` starting from zero, and the pass's
sum is then added to ``out`` (``accumulate``, or every pass after the first) or stored. The
same in every tile, row and column, whatever the vector width: results do not depend on the
batch size, the block of rows, where a column falls in a panel, or the machine's vector width
(tested: bitwise the same at 16, 32 and 64 bytes). Blocked so for accuracy:
one chain over all of ``K`` (the first version) carries an error that grows with ``K``, and
left float32 weight gradients further from float64 than torch's (LSTM ``weight_hh`` at (64,
64, 256) on the tiles: 4.4e-7 against torch's 3.7e-7), as did one chain over the input and
recurrent products together.

The tile is written in LLVM IR (:func:`_tile_kernel`). The same tile as generated scalar Numba
code (one local variable per accumulator) ran at 3-5 GFLOP/s: Numba turns off LLVM's SLP
vectoriser, so the scalars never became vectors. Run as plain Python (``NUMBA_DISABLE_JIT=1``)
a tile is NumPy, one ``k`` at a time, with the same order (but no fused multiply-adds).
"""
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._blocks import copy_into, zero_columns
from ._jit import jit, jit_borrowing


def _vector_bytes():
    """Bytes in one SIMD register of the CPU that Numba compiles for: 64 with AVX-512 (zmm), else
    32 (AVX2's ymm; LLVM splits them on older machines). Numba's ``NUMBA_CPU_FEATURES`` when set
    (a cache built for other machines), else the host's, as Numba itself reads them; Numba keys
    its on-disk cache by the same CPU name and features, so a kernel compiled with one width is
    never loaded where the other is chosen."""
    features = numba.config.CPU_FEATURES
    if features is None:
        from llvmlite import binding
        features = binding.get_host_cpu_features().flatten()
    return 64 if "+avx512f" in features.split(",") else 32


#: bytes in one SIMD register the tiles are written for (:func:`_vector_bytes`)
VECTOR_BYTES = _vector_bytes()
#: rows of ``out`` per tile and registers per row: with AVX2's 16 registers 4 x 3 = 12
#: accumulators, which hide the FMA latency (4-5 cycles, 2 per cycle) and leave room for the
#: panel's and ``a``'s values; with AVX-512's 32, 8 x 3 = 24, which also spread a tile's fixed
#: cost (zeroing and storing its accumulators) over twice the multiply-adds and load each
#: panel row once for 8 rows. Measured on a 2-core AVX-512 Xeon, 4 -> 8 rows (float32,
#: GFLOP/s): ``(B, K, N) = (64, 256, 1024)`` 140 -> 173, ``(32, 128, 512)`` 147 -> 182,
#: ``(8, 64, 256)`` 130 -> 167, ``(32, 32, 512)`` 130 -> 153.
ROWS, VECTORS = (8 if VECTOR_BYTES == 64 else 4), 3
#: rows of the block that takes a tile of its own when ``ROWS`` is 8 and 4 to 7 rows are left
#: (a batch of 4, a thread's block of 4 rows); fewer left take one-row tiles
SHORT_ROWS = 4
#: panels side by side in a one-row tile (4 x 3 = 12 accumulators again)
SPANS = 4
#: rows of a panel per pass: 128 x NT elements are 12 KiB in either dtype (24 KiB with AVX-512's
#: wider panels), so a panel's block stays in the 32 KiB L1 (48 KiB on the AVX-512 Xeon) while
#: the blocks of rows go by (a whole panel at K = 256 did not: 15-20 % slower than the BLAS
#: there; passes of 160 on the Xeon: 0.97-1.02 of the time of LSTM inference). Each pass sums
#: its own chain from zero and adds it to ``out`` (blocked summation: the float32 error grows
#: with ``DEPTH``, not with ``K``).
DEPTH = 128


@jit
def panel_width(itemsize):
    """Columns in one panel for elements of ``itemsize`` bytes (float32 24, float64 12; with
    AVX-512 48 and 24)."""
    return VECTORS * VECTOR_BYTES // itemsize


@jit
def passes(K):
    """Passes of :data:`DEPTH` rows of ``k`` in a product over ``K`` rows."""
    return -(-K // DEPTH)


@jit
def saves_a_pass(k_a, k_b):
    """Whether one product over ``k_a + k_b`` rows of ``k`` (two operands side by side) takes
    fewer passes than the two products on their own: then joining them saves a pass's zeroing
    and adding of the accumulators, which at a short ``k_a`` (an LSTM's ``x_t W_ih^T`` with
    ``I = 16``) costs as much as its multiply-adds."""
    return passes(k_a + k_b) < passes(k_a) + passes(k_b)


@jit
def _pack_into(panels, kp, w, k0, k1, n0, n1):
    """Copy the block ``w[k0:k1, n0:n1]`` into ``panels`` from row ``kp`` on (panel ``p``
    holds columns ``n0 + p NT ..``). ``w`` may be a transpose (``W^T`` of a layer's C-contiguous
    ``W``, whose columns are contiguous): then each column is copied down the panel, read
    along ``W``'s row, not across strided rows (a transposed copy made first took 0.7-0.9 ms of
    a 33 ms float32 LSTM inference at ``(B, I, H) = (64, 64, 256)``, cold from memory; packing
    from the weight's rows takes 0.50-0.55 of transpose and pack)."""
    nt = panels.shape[2]
    by_rows = w.strides[1] == w.itemsize or w.strides[0] != w.itemsize
    for p in range(panels.shape[0]):
        c0 = n0 + p * nt
        width = min(nt, n1 - c0)
        block = panels[p]
        if by_rows:
            for k in range(k1 - k0):
                src = w[k0 + k, c0:c0 + width]
                dst = block[kp + k]
                for j in range(width):
                    dst[j] = src[j]
        else:
            for j in range(width):
                src = w[k0:k1, c0 + j]
                for k in range(k1 - k0):
                    block[kp + k, j] = src[k]


#: bytes in a cache line: the panels start on one (:func:`_zeros_on_lines`), as the layers'
#: pooled arrays do (``lstm_np._workspace`` takes this value)
LINE = 64


@jit
def _zeros_on_lines(shape, dtype_of):
    """A zeroed C-contiguous array of ``shape`` and ``dtype_of``'s dtype whose first element
    starts a cache line. Numba's allocator promises 32 bytes, and where the panels landed 32
    bytes past a line every 64-byte load of an AVX-512 tile straddled two lines. A panel row
    (``NT`` columns) is three whole vectors, so with the first element on a line no vector load
    of a tile straddles two (a row is three lines with 64-byte vectors, one and a half with
    32-byte ones). Measured here with only this changed, old and new alternating (one thread,
    bitwise the same): float32 LSTM training at ``(B, I, H) = (64, 64, 256)`` 0.957 of the
    time, inference at ``(32, 32, 128)`` 0.973, at ``(64, 64, 256)`` 1.002 (where the old
    panels had happened to land on a line)."""
    size = 1
    for n in shape:
        size *= n
    spare = LINE // dtype_of.itemsize
    raw = np.zeros(size + spare, dtype_of.dtype)
    start = (-raw.ctypes.data % LINE) // dtype_of.itemsize
    return raw[start:start + size].reshape(shape)


@jit
def _empty_panels(n, K, dtype_of):
    """Zeroed ``(P, K, NT)`` panels for ``n`` columns of ``dtype_of``'s dtype, on cache lines."""
    nt = panel_width(dtype_of.itemsize)
    return _zeros_on_lines(((max(n, 0) + nt - 1) // nt, max(K, 0), nt), dtype_of)


@jit
def pack_panels(w, k0, k1, n0, n1):
    """``w[k0:k1, n0:n1]`` as ``(P, K, NT)`` panels, ``P = ceil((n1 - n0) / NT)``: panel ``p``
    holds columns ``n0 + p NT ..`` with zeros past ``n1``. ``w`` may be a transpose (see
    :func:`_pack_into`)."""
    panels = _empty_panels(n1 - n0, k1 - k0, w)
    _pack_into(panels, 0, w, k0, k1, n0, n1)
    return panels


@jit
def pack_transposed(first, second, n0, n1):
    """``[first^T; second^T][:, n0:n1]`` as ``(P, K, NT)`` panels (:func:`pack_panels`), ``K =
    K1 + K2``, from the weights as the layers keep them, ``first (N, K1)`` and ``second (N,
    K2)`` (an LSTM's ``W_ih``, ``W_hh``; ``K2 = 0`` for one alone): no transposed copy is made
    first."""
    K1 = first.shape[1]
    panels = _empty_panels(n1 - n0, K1 + second.shape[1], first)
    _pack_into(panels, 0, first.T, 0, K1, n0, n1)
    _pack_into(panels, K1, second.T, 0, second.shape[1], n0, n1)
    return panels


@jit
def _with_scratch(panels):
    """``(panels, scratch)``: what :func:`panel_matmul` takes, with its ``(ROWS, NT)`` scratch
    block for a short last panel."""
    return panels, _zeros_on_lines((ROWS, panels.shape[2]), panels)


@jit
def prepare_transposed(first, second, n0, n1):
    """:func:`prepare_panels` of ``[first^T; second^T][:, n0:n1]`` (:func:`pack_transposed`)."""
    return _with_scratch(pack_transposed(first, second, n0, n1))


@jit
def prepare_panels(w, k0, k1, n0, n1):
    """What :func:`panel_matmul` takes for the block ``w[k0:k1, n0:n1]``: its panels
    (:func:`pack_panels`) and a ``(ROWS, NT)`` scratch block for a short last panel, both made
    once, before a time loop."""
    return _with_scratch(pack_panels(w, k0, k1, n0, n1))


@jit_borrowing
def _row_blocks(B):
    """How ``B`` rows go to tiles: blocks of :data:`ROWS` below ``full_rows``, one block of
    :data:`SHORT_ROWS` from there below ``short`` (if that many are left and ``ROWS`` is
    larger), one-row tiles from ``short`` on: ``(full_rows, short)``."""
    full_rows = B - B % ROWS
    return full_rows, (full_rows + SHORT_ROWS if B - full_rows >= SHORT_ROWS else full_rows)


@jit_borrowing
def panel_matmul(a, k0, prepared, out, n0, n1, accumulate):
    """``out[:, n0:n1] (+)= a[:, k0:k0 + K] @ W`` with ``prepared = prepare_panels(W, .., n0,
    n1)`` (``K`` the panels' second axis); ``+=`` if ``accumulate``, else ``=``. Rows of ``a``
    and ``out`` must be contiguous. Allocates nothing.

    Blocks of :data:`ROWS` rows take one panel per tile, then a block of :data:`SHORT_ROWS`
    if that many are left (only when ``ROWS`` is larger). A row left over takes :data:`SPANS`
    panels per tile (one row against one panel would give three accumulators, too few to hide
    the FMA latency), or two where fewer than :data:`SPANS` are left. A last panel narrower
    than ``NT`` takes a tile of one or two vectors per row when its width is a whole number of
    vectors, else goes through a small scratch block (a tile reads and writes ``NT``
    columns).

    Order of the blocks of rows: where ``K <= N`` (``n1 - n0``), panel by panel, each through
    all its passes, so the panel's ``(B, NT)`` block of ``out`` is read and written from cache
    pass after pass; else (BPTT's ``da W``, ``K = G H``) pass by pass over all panels, so each
    pass's ``(B, DEPTH)`` block of ``a`` is read from cache panel after panel. Every entry
    still sums its passes in the same order, so the results are bitwise the same either way.
    Panel by panel where ``K <= N``, against pass by pass everywhere, old and new alternating
    call by call (one thread, four runs): float32 LSTM inference at ``(B, I, H) = (128, 128,
    512)`` 0.953-0.965 of the time (there a pass over all panels wrote and read back the whole
    1 MiB ``out``, the weights streaming through the L2 beside it), at ``(64, 64, 256)``
    0.977-0.999, float64 0.962-0.999; training 0.96-1.02 (two copies of the same code differ
    by 3 % there). Panel by panel everywhere left BPTT re-reading its ``da_t`` (2 MiB in
    float64 at ``H = 512``) once per panel."""
    panels, scratch = prepared
    B = a.shape[0]
    K, nt = panels.shape[1], panels.shape[2]
    full_rows, short = _row_blocks(B)
    full_panels = (n1 - n0) // nt
    last = n1 - n0 - full_panels * nt                   # columns in a last, narrower panel
    if K == 0 and not accumulate:
        zero_columns(out, n0, n1)
    # the tiles are called here and nowhere deeper: a compiled function that takes the arrays
    # costs their reference counts per call (atomic increments and decrements, about 100
    # cycles a tile: at K = 32, 0.8 of the multiply-adds' time)
    # panels taken through all passes at a time: one (K <= N) or all (see the docstring)
    group = 1 if K <= n1 - n0 else max(1, full_panels)
    for p0 in range(0, full_panels, group):
        for kb in range(0, K, DEPTH):
            ke = min(K, kb + DEPTH)
            onto = accumulate or kb > 0
            for p in range(p0, min(full_panels, p0 + group)):
                c = n0 + p * nt
                for b in range(0, full_rows, ROWS):
                    _tile_rows(a, b, k0, panels, p, kb, ke, out, b, c, onto)
                if short > full_rows:
                    _tile_short(a, full_rows, k0, panels, p, kb, ke, out, full_rows, c, onto)
    for kb in range(0, K, DEPTH):
        ke = min(K, kb + DEPTH)
        onto = accumulate or kb > 0
        for b in range(short, B):
            p = 0
            while p + SPANS <= full_panels:
                _tile_row_spans(a, b, k0, panels, p, kb, ke, out, b, n0 + p * nt, onto)
                p += SPANS
            if p + 2 <= full_panels:
                _tile_row_pair(a, b, k0, panels, p, kb, ke, out, b, n0 + p * nt, onto)
                p += 2
            for q in range(p, full_panels):
                _tile_row(a, b, k0, panels, q, kb, ke, out, b, n0 + q * nt, onto)
        if last:
            _last_panel(a, k0, panels, full_panels, kb, ke, out, n0 + full_panels * nt, last,
                        onto, scratch)


@jit
def _tiles_matmul(a, w, out):
    """``out = a @ w`` for ``a (M, K)``, ``w (K, N)``, ``out (M, N)`` (rows of ``a`` and ``out``
    contiguous) by the tiles: ``w`` packed once (a layer's ``W_ih^T`` from ``W_ih``'s rows,
    :func:`_pack_into`), then all ``M`` rows."""
    K, N = w.shape
    panel_matmul(a, 0, prepare_panels(w, 0, K, 0, N), out, 0, N, False)


def _numpy_matmul(a, w, out):
    """``out = a @ w`` (NumPy)."""
    np.matmul(a, w, out=out)


#: ``tiles_matmul(a, w, out)``: ``out = a @ w`` over many rows by the tiles (a layer's input
#: projection over all ``T * B`` rows); as plain Python (``NUMBA_DISABLE_JIT=1``) NumPy's matmul
tiles_matmul = _numpy_matmul if numba.config.DISABLE_JIT else _tiles_matmul


@jit_borrowing
def _last_panel(a, k0, panels, p, kb, ke, out, c, width, accumulate, scratch):
    """The tiles of the last panel ``p``, ``width < NT`` columns from column ``c`` of ``out``,
    for every row: tiles of its one or two vectors where ``width`` is whole vectors, else
    through ``scratch`` (float64 ``N = 64`` on AVX2, five panels and 4 columns: one step at
    ``B = 8``, ``K = 64`` took 2.23 us with the 4 columns through the scratch block, 1.67 us
    for the five panels alone)."""
    B = a.shape[0]
    full_rows, short = _row_blocks(B)
    lanes = panels.shape[2] // VECTORS
    if width == lanes or width == 2 * lanes:
        vectors = width // lanes
        for b in range(0, full_rows, ROWS):
            _narrow_tile(a, b, k0, panels, p, kb, ke, out, c, accumulate, ROWS, vectors)
        if short > full_rows:
            _narrow_tile(a, full_rows, k0, panels, p, kb, ke, out, c, accumulate, SHORT_ROWS,
                         vectors)
        for b in range(short, B):
            _narrow_tile(a, b, k0, panels, p, kb, ke, out, c, accumulate, 1, vectors)
    else:
        for b in range(0, B, ROWS):
            rows = min(ROWS, B - b)
            if accumulate:              # else the tile overwrites scratch: nothing to bring
                for r in range(rows):
                    copy_into(scratch[r, :width], out[b + r, c:c + width])
            if rows == ROWS:
                _tile_rows(a, b, k0, panels, p, kb, ke, scratch, 0, 0, accumulate)
            else:
                for r in range(rows):
                    _tile_row(a, b + r, k0, panels, p, kb, ke, scratch, r, 0, accumulate)
            for r in range(rows):
                copy_into(out[b + r, c:c + width], scratch[r, :width])


@jit_borrowing
def _narrow_tile(a, b, k0, panels, p, kb, ke, out, c, accumulate, rows, vectors):
    """The tile of the first ``vectors`` (1 or 2) vectors of panel ``p`` for ``rows``
    (:data:`ROWS`, :data:`SHORT_ROWS` or 1) rows from ``b``, written into ``out`` from column
    ``c`` (a tile's size is fixed when it is compiled: one of six)."""
    if rows == ROWS and vectors == 1:
        _tile_rows_1(a, b, k0, panels, p, kb, ke, out, b, c, accumulate)
    elif rows == ROWS:
        _tile_rows_2(a, b, k0, panels, p, kb, ke, out, b, c, accumulate)
    elif rows == SHORT_ROWS and vectors == 1:
        _tile_short_1(a, b, k0, panels, p, kb, ke, out, b, c, accumulate)
    elif rows == SHORT_ROWS:
        _tile_short_2(a, b, k0, panels, p, kb, ke, out, b, c, accumulate)
    elif vectors == 1:
        _tile_row_1(a, b, k0, panels, p, kb, ke, out, b, c, accumulate)
    else:
        _tile_row_2(a, b, k0, panels, p, kb, ke, out, b, c, accumulate)


def _python_tile(rows, spans, vectors=VECTORS):
    """The tile as NumPy (for ``NUMBA_DISABLE_JIT=1``), one ``k`` at a time so that every entry
    is still one chain in ``k`` order. float32 as a fused multiply-add rounds it, but for a rare
    double rounding: each product is exact in float64, and each step's sum is rounded to
    float64 and then to float32 (multiplying and adding in float32, two roundings a step, left
    an RNN's float32 gradients at (32, 32, 128) further from float64 than torch's on an AVX-512
    Xeon: median 1.06x, where the compiled tiles are closer). float64: multiply, then add."""
    def tile(a, arow, acol, panels, p, kb, ke, out, orow, ocol, accumulate):
        cols = panels.shape[2] * vectors // VECTORS          # columns of each panel
        o = out[orow:orow + rows, ocol:ocol + spans * cols]
        acc = np.zeros(o.shape, o.dtype)
        for k in range(kb, ke):
            x = a[arow:arow + rows, acol + k, None].astype(np.float64)
            w = panels[p:p + spans, k, :cols].reshape(-1).astype(np.float64)
            acc[...] = acc + x * w
        if accumulate:
            o += acc
        else:
            o[...] = acc
    return tile


def _tile_kernel(rows, spans, vectors=VECTORS, vector_bytes=VECTOR_BYTES):
    """An intrinsic ``tile(a, arow, acol, panels, p, kb, ke, out, orow, ocol, accumulate)``:
    ``out[orow:orow + rows, ocol:ocol + spans NT] (+)= a[arow:arow + rows, acol + kb:acol + ke]
    @ W[kb:ke]`` with ``W`` the ``spans`` panels ``panels[p:p + spans]`` side by side
    (``panels (P, K, NT)`` C-contiguous), in ``rows x spans x vectors`` vector accumulators of
    ``vector_bytes`` bytes. ``NT`` is ``VECTORS * vector_bytes / itemsize``; a one-panel tile
    with fewer ``vectors`` (or narrower ones, in a test) makes the panel's first columns only.

    The IR: zero the accumulators, loop over ``k`` (broadcast ``a[r, acol + k]``, load the
    panels' row ``k``, one ``llvm.fma`` per accumulator), then add them to ``out`` (if
    ``accumulate``) or store them. Nothing is checked: the callers keep every index in
    range."""
    @intrinsic
    def tile(typingctx, a, arow, acol, panels, p, kb, ke, out, orow, ocol, accumulate):
        def codegen(context, builder, signature, args):
            a_ty, p_ty, o_ty = signature.args[0], signature.args[3], signature.args[7]
            arow_, acol_, p_, kb_, ke_, orow_, ocol_ = (
                context.cast(builder, args[i], signature.args[i], types.intp)
                for i in (1, 2, 4, 5, 6, 8, 9))
            acc_flag = context.cast(builder, args[10], signature.args[10], types.boolean)
            A = context.make_array(a_ty)(context, builder, args[0])
            P = context.make_array(p_ty)(context, builder, args[3])
            O = context.make_array(o_ty)(context, builder, args[7])
            fty = context.get_value_type(a_ty.dtype)
            size = context.get_abi_sizeof(fty)
            lanes = vector_bytes // size
            vty = ir.VectorType(fty, lanes)
            i64 = ir.IntType(64)
            cols = spans * vectors                     # vectors per row of the tile

            def const(v):
                return ir.Constant(i64, v)

            def address(data, offset, ty):
                byte = builder.bitcast(data, ir.IntType(8).as_pointer())
                return builder.bitcast(builder.gep(byte, [offset]), ty.as_pointer())

            def element(array, row, col, ty):            # array[row, col] of a 2-D array
                stride = cgutils.unpack_tuple(builder, array.strides)[0]
                return address(array.data, builder.add(builder.mul(row, stride),
                                                       builder.mul(col, const(size))), ty)

            p_stride, k_stride, _ = cgutils.unpack_tuple(builder, P.strides)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{lanes}f{8 * size}")
            o_ptrs = [[element(O, builder.add(orow_, const(r)),
                               builder.add(ocol_, const(v * lanes)), vty)
                       for v in range(cols)] for r in range(rows)]
            zero = ir.Constant(vty, None)
            entry = builder.block
            head = builder.append_basic_block("tile.head")
            body = builder.append_basic_block("tile.body")
            done = builder.append_basic_block("tile.done")
            builder.branch(head)

            builder.position_at_end(head)
            k = builder.phi(i64)
            k.add_incoming(kb_, entry)
            acc = [[builder.phi(vty) for _ in range(cols)] for _ in range(rows)]
            for r in range(rows):
                for v in range(cols):
                    acc[r][v].add_incoming(zero, entry)
            builder.cbranch(builder.icmp_signed("<", k, ke_), body, done)

            builder.position_at_end(body)
            w = []
            for q in range(spans):
                row_k = builder.add(builder.mul(builder.add(p_, const(q)), p_stride),
                                    builder.mul(k, k_stride))
                w += [builder.load(address(P.data, builder.add(row_k, const(v * lanes * size)),
                                           vty), align=size) for v in range(vectors)]
            broadcast = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            new = []
            for r in range(rows):
                x = builder.load(element(A, builder.add(arow_, const(r)), builder.add(acol_, k),
                                         fty), align=size)
                x = builder.insert_element(ir.Constant(vty, ir.Undefined), x,
                                           ir.Constant(ir.IntType(32), 0))
                x = builder.shuffle_vector(x, ir.Constant(vty, ir.Undefined), broadcast)
                new.append([builder.call(fma, [x, w[v], acc[r][v]]) for v in range(cols)])
            k.add_incoming(builder.add(k, const(1)), builder.block)
            for r in range(rows):
                for v in range(cols):
                    acc[r][v].add_incoming(new[r][v], builder.block)
            builder.branch(head)

            builder.position_at_end(done)
            for r in range(rows):
                for v in range(cols):
                    onto = builder.fadd(builder.load(o_ptrs[r][v], align=size), acc[r][v])
                    builder.store(builder.select(acc_flag, onto, acc[r][v]), o_ptrs[r][v],
                                  align=size)
            return context.get_dummy_value()

        return types.void(a, arow, acol, panels, p, kb, ke, out, orow, ocol, accumulate), codegen

    return tile


_make = _python_tile if numba.config.DISABLE_JIT else _tile_kernel
_tile_rows = _make(ROWS, 1)           # ROWS rows x one panel
_tile_short = _make(SHORT_ROWS, 1)    # SHORT_ROWS rows x one panel
_tile_row = _make(1, 1)               # one row x one panel
_tile_row_spans = _make(1, SPANS)     # one row x SPANS panels
_tile_row_pair = _make(1, 2)          # one row x two panels
_tile_rows_1 = _make(ROWS, 1, 1)      # the first one or two vectors of a panel (a narrow last one)
_tile_rows_2 = _make(ROWS, 1, 2)
_tile_short_1 = _make(SHORT_ROWS, 1, 1)
_tile_short_2 = _make(SHORT_ROWS, 1, 2)
_tile_row_1 = _make(1, 1, 1)
_tile_row_2 = _make(1, 1, 2)
