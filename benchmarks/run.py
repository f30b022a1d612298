"""Side-by-side benchmarks of lstm_np and torch, in one process, with the same thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py --out benchmarks/RESULTS.md

Sections (``--sections train,infer,stream,memory,startup,flops,accuracy``; ``--quick`` for the
two smallest shapes and 3 repeats):

1. training step: forward + backward of ``sum(y * r)`` over T = 100, 1 and 2 threads;
2. inference: forward only, same shapes;
3. streaming: batch 1, one step per call with carried state, against ``nn.LSTM`` called on one
   step and against ``nn.LSTMCell`` (and the GRU/RNN equivalents);
4. memory: bytes lstm_np's tape keeps for T = 100 against the bytes torch saves for backward
   (every tensor passed to ``saved_tensors_hooks``, counted once);
5. start-up: ``import lstm_np`` plus a first forward/backward, in a fresh process, with a cold
   and with a warm Numba cache;
6. achieved GFLOP/s on the largest shapes next to numpy's matmul GFLOP/s measured in this run;
7. float32 gradient accuracy: max relative error of every weight and bias gradient against the
   float64 result, for lstm_np and for torch.

Every timing is the median of ``--repeats`` runs (more for the small rows and for the two
largest shapes, :func:`repeats_for`) after a warm-up, lstm_np and torch timed in
alternation (with 2 threads: in blocks, see :func:`paired_medians`); ratios are lstm_np / torch
(below 1: lstm_np is faster). The machine is shared and noisy: read ratios, and re-run a row
before trusting it.
"""
import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

SHAPES = [(1, 8, 32), (8, 16, 64), (32, 32, 128), (64, 64, 256), (128, 128, 512)]
STREAM_SHAPES = [(8, 32), (32, 128), (128, 512)]
T = 100
#: seconds of untimed calls before each block of timed ones with several threads
WARM_UP = 0.1
CELLS = ("lstm", "gru", "rnn")
DTYPES = {"float32": np.float32, "float64": np.float64}


def median_time(fn, repeats):
    fn()                       # warm-up: compilation, page faults, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_medians(ours, theirs, repeats, threads=1):
    """Medians of ``ours`` and ``theirs``.

    One thread: timed in alternation (ours, theirs, ours, ...), so that the machine's drifts and
    bursts of load fall on both sides alike.

    Several threads: in blocks (ours x n, theirs x n, ours x n, ...: four rounds), each block
    after a pause and WARM_UP seconds of untimed calls (at least one). Both libraries keep a
    pool of worker threads that spin for a while after each parallel call (OpenBLAS up to
    ~0.1 s, torch's OpenMP pool); on two cores, strict alternation times each library against
    the other's spinning workers, and rows came out 2-10x off what either library does alone.
    The blocks time each one in its own steady state, as a program using only that library
    would run. This VM has slow and fast spells: four rounds (two before) spread both libraries
    over more of them, and after a pause the first calls may run slow for tens of
    milliseconds (seen: lstm_np's two-thread inference at (32, 32, 128) at 16-19 ms for its
    first four calls after a torch block, 9 ms after), which one untimed call did not cover.
    """
    if threads == 1:
        ours()
        theirs()
        t_ours, t_theirs = [], []
        for _ in range(repeats):
            for fn, times in ((ours, t_ours), (theirs, t_theirs)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        return statistics.median(t_ours), statistics.median(t_theirs)
    per_block = (repeats + 1) // 2
    t_ours, t_theirs = [], []
    for _ in range(4):
        for fn, times in ((ours, t_ours), (theirs, t_theirs)):
            time.sleep(0.25)            # the other library's idle workers stop spinning
            warm_until = time.perf_counter() + WARM_UP
            fn()
            while time.perf_counter() < warm_until:
                fn()
            for _ in range(per_block):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
    return statistics.median(t_ours), statistics.median(t_theirs)


def _ours(cell, I, H, dtype, **kw):
    import lstm_np
    cls = {"lstm": lstm_np.LSTM, "gru": lstm_np.GRU, "rnn": lstm_np.RNN}[cell]
    return cls(I, H, dtype=dtype, seed=0, **kw)


def _theirs(cell, layer):
    import torch
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    tdt = torch.float64 if layer.dtype == np.float64 else torch.float32
    module = cls(layer.input_size, layer.hidden_size, dtype=tdt)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.params.items()})
    return module


def training_pair(cell, B, I, H, dtype, rng):
    import torch
    layer = _ours(cell, I, H, dtype)
    module = _theirs(cell, layer)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    r = rng.standard_normal((T, B, H)).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_(True)
    rt = torch.from_numpy(r)

    def ours():
        _, _, tape = layer.forward(x)
        layer.backward(tape, r)

    def theirs():
        module.zero_grad(set_to_none=True)
        xt.grad = None
        y, _ = module(xt)
        (y * rt).sum().backward()
    return ours, theirs


def inference_pair(cell, B, I, H, dtype, rng):
    import torch
    layer = _ours(cell, I, H, dtype)
    module = _theirs(cell, layer)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    xt = torch.from_numpy(x)

    def theirs():
        with torch.no_grad():
            module(xt)
    return (lambda: layer(x)), theirs


def flops_training(cell, B, I, H):
    """Multiply-adds x 2 of one training step: forward (input and recurrent products),
    backward (the same two products for the input gradients, and the two weight gradients)."""
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    return 2 * T * B * G * H * (I + H) * 3


@contextlib.contextmanager
def lstm_np_threads(n):
    """lstm_np on ``n`` threads (``lstm_np.set_num_threads``: blocks of rows in parallel, NumPy's
    BLAS one thread per block), back to one afterwards."""
    import lstm_np
    lstm_np.set_num_threads(n)
    try:
        yield
    finally:
        lstm_np.set_num_threads(1)


#: the rows of at most this many ``B * H`` (the two smallest shapes) take SMALL_ROW_FACTOR times
#: the repeats: their calls last milliseconds, and their medians of five moved by up to 2x
#: between runs on this VM (torch's as much as lstm_np's), right where the ratios are held to 0.25
SMALL_ROWS, SMALL_ROW_FACTOR = 512, 5
#: the rows from this ``B * H`` (the two largest shapes) take LARGE_ROW_EXTRA more repeats: there
#: the float32 LSTM sits at parity with torch, single calls of one library moved by 10-20 %
#: within a minute, and a median of three (what these rows took before) landed either side of
#: 1.0 from run to run; more calls narrow the median, they do not move it
LARGE_ROWS, LARGE_ROW_EXTRA = 16384, 4


def repeats_for(B, H, repeats):
    """Timed calls per library for one row: ``repeats``; five times as many for the small rows
    (:data:`SMALL_ROWS`), ``repeats + LARGE_ROW_EXTRA`` from :data:`LARGE_ROWS`."""
    if B * H <= SMALL_ROWS:
        return repeats * SMALL_ROW_FACTOR
    return repeats if B * H < LARGE_ROWS else repeats + LARGE_ROW_EXTRA


def section_compute(kind, args, rng, lines):
    import torch
    from threadpoolctl import threadpool_limits
    pair = training_pair if kind == "train" else inference_pair
    title = ("Training step (forward + backward of sum(y * r))" if kind == "train"
             else "Inference (forward only)")
    lines += ["", f"### {title}, T = {T}", "",
              "| cell | dtype | B, I, H | threads | lstm_np ms | torch ms | ratio |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    flops = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads), lstm_np_threads(threads):
            for cell in args.cells:
                for dname in args.dtypes:
                    for B, I, H in args.shapes:
                        ours, theirs = pair(cell, B, I, H, DTYPES[dname], rng)
                        reps = repeats_for(B, H, args.repeats)
                        t_ours, t_theirs = paired_medians(ours, theirs, reps, threads)
                        row = (f"| {cell.upper()} | {dname} | {B}, {I}, {H} | {threads} | "
                               f"{t_ours * 1e3:.3g} | {t_theirs * 1e3:.3g} | "
                               f"{t_ours / t_theirs:.2f} |")
                        print(row, flush=True)
                        lines.append(row)
                        if kind == "train":
                            flops[(cell, dname, B, I, H, threads)] = (t_ours, t_theirs)
    return flops


def matmul_gflops(dtype, threads, n=1024):
    from threadpoolctl import threadpool_limits
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    with threadpool_limits(limits=threads):
        t = median_time(lambda: a @ a, 5)
    return 2 * n ** 3 / t / 1e9


def section_flops(train_times, args, lines):
    lines += ["", "### Achieved GFLOP/s of a training step (largest shapes) vs numpy matmul",
              "", "| cell | dtype | B, I, H | threads | lstm_np GFLOP/s | torch GFLOP/s | "
              "numpy matmul GFLOP/s | lstm_np / matmul |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    peaks = {}
    for (cell, dname, B, I, H, threads), (t_ours, t_theirs) in train_times.items():
        if B < 64:
            continue
        key = (dname, threads)
        if key not in peaks:
            peaks[key] = matmul_gflops(DTYPES[dname], threads)
        f = flops_training(cell, B, I, H)
        row = (f"| {cell.upper()} | {dname} | {B}, {I}, {H} | {threads} | {f / t_ours / 1e9:.1f} | "
               f"{f / t_theirs / 1e9:.1f} | {peaks[key]:.1f} | "
               f"{f / t_ours / 1e9 / peaks[key]:.0%} |")
        print(row, flush=True)
        lines.append(row)


def section_stream(args, rng, lines):
    import torch
    torch.set_num_threads(1)
    lines += ["",
              "### Streaming: batch 1, one step per call, state carried (microseconds per step)",
              "", "| cell | dtype | I, H | lstm_np us | torch nn.<cell> us | torch <cell>Cell us | "
              "ratio vs nn.<cell> | ratio vs Cell |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for cell in args.cells:
        for dname in ("float32",):
            dtype = DTYPES[dname]
            for I, H in STREAM_SHAPES:
                layer = _ours(cell, I, H, dtype)
                module = _theirs(cell, layer)
                cell_cls = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell,
                            "rnn": torch.nn.RNNCell}[cell]
                tcell = cell_cls(I, H, dtype=module.weight_ih_l0.dtype)
                tcell.load_state_dict({k.replace("_l0", ""): v
                                       for k, v in module.state_dict().items()})
                stream = layer.stream()
                x = rng.standard_normal(I).astype(dtype)
                xt = torch.from_numpy(x)
                n = 2000
                state = {"full": None, "cell": None}

                def ours():
                    for _ in range(n):
                        stream.step(x)

                def full():
                    with torch.no_grad():
                        s = state["full"]
                        xs = xt.view(1, 1, I)
                        for _ in range(n):
                            _, s = module(xs, s)
                        state["full"] = s

                def cellwise():
                    with torch.no_grad():
                        s = state["cell"]
                        xs = xt.view(1, I)
                        for _ in range(n):
                            s = tcell(xs, s)
                        state["cell"] = s
                t_o, t_f, t_c = (median_time(f, 5) / n * 1e6 for f in (ours, full, cellwise))
                row = (f"| {cell.upper()} | {dname} | {I}, {H} | {t_o:.2f} | {t_f:.2f} | "
                       f"{t_c:.2f} | {t_o / t_f:.2f} | {t_o / t_c:.2f} |")
                print(row, flush=True)
                lines.append(row)


def tape_bytes(tape):
    total = sum(a.nbytes for a in tape.inputs)
    for kept in tape.steps:
        total += sum(a.nbytes for a in kept.values())
    total += sum(m.nbytes for m in tape.dropout_masks if m is not None)
    return total


def section_memory(args, rng, lines):
    import torch
    lines += ["", f"### Memory kept for backward, T = {T} (float32, MB)", "",
              "| cell | B, I, H | lstm_np tape | torch saved tensors | ratio |",
              "| --- | --- | ---: | ---: | ---: |"]
    for cell in args.cells:
        for B, I, H in args.shapes:
            layer = _ours(cell, I, H, np.float32)
            module = _theirs(cell, layer)
            x = rng.standard_normal((T, B, I)).astype(np.float32)
            _, _, tape = layer.forward(x)
            ours = tape_bytes(tape)
            seen = {}

            def pack(t):
                seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
                return t
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                y, _ = module(torch.from_numpy(x).requires_grad_(True))
            theirs = sum(seen.values())
            row = (f"| {cell.upper()} | {B}, {I}, {H} | {ours / 1e6:.2f} | {theirs / 1e6:.2f} | "
                   f"{ours / theirs:.2f} |")
            print(row, flush=True)
            lines.append(row)


_STARTUP_FLOOR = """
    import time
    t0 = time.perf_counter()
    import numpy as np
    import numba
    t1 = time.perf_counter()
    @numba.njit(cache=True)
    def total(a):
        s = 0.0
        for v in a:
            s += v
        return s
    total(np.zeros(3))
    t2 = time.perf_counter()
    print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""


def section_startup(lines):
    code = textwrap.dedent("""
        import time
        t0 = time.perf_counter()
        import numpy as np
        import lstm_np
        t1 = time.perf_counter()
        layer = lstm_np.LSTM(8, 32, seed=0)
        y, s, tape = layer.forward(np.zeros((10, 2, 8), np.float32))
        layer.backward(tape, np.ones_like(y))
        t2 = time.perf_counter()
        print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
    """)
    lines += ["", "### Start-up: import lstm_np + first LSTM forward/backward (fresh process, s)",
              "", "The floor row is any Numba program: `import numpy, numba` and the first call of "
              "a one-line cached kernel. Medians of 5 fresh processes. Python's bytecode cache "
              "is on in them, as in any pip install (which compiles it); with "
              "`PYTHONDONTWRITEBYTECODE` set, as in this machine's shell, every start compiles "
              "lstm_np's sources again (measured: about 0.35 s more).",
              "", "| run | import | first call | total |", "| --- | ---: | ---: | ---: |"]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        env.pop("PYTHONDONTWRITEBYTECODE", None)       # warm means Python's cache too
        floor = os.path.join(cache, "floor.py")      # Numba caches only kernels from a file
        with open(floor, "w") as f:
            f.write(textwrap.dedent(_STARTUP_FLOOR))
        runs = [("lstm_np, cold Numba cache", ["-c", code], 1),
                ("lstm_np, warm Numba cache", ["-c", code], 5),
                ("floor: numpy + numba + one cached kernel", [floor], 5)]
        for label, command, repeats in runs:
            if repeats > 1:      # fill the cache first
                subprocess.run([sys.executable, *command], env=env, capture_output=True,
                               check=True)
            times = np.array([[float(v) for v in subprocess.run(
                [sys.executable, *command], env=env, capture_output=True, text=True,
                check=True).stdout.split()] for _ in range(repeats)])
            imp, first = np.median(times, axis=0)
            total = np.median(times.sum(axis=1))
            row = f"| {label} | {imp:.2f} | {first:.2f} | {total:.2f} |"
            print(row, flush=True)
            lines.append(row)


def section_accuracy(args, rng, lines):
    import torch
    torch.set_num_threads(1)
    lines += ["", "### float32 gradient accuracy: max relative error against the float64 result",
              "", "| cell | B, I, H | parameter | lstm_np float32 | torch float32 |",
              "| --- | --- | --- | ---: | ---: |"]
    from lstm_np.gradcheck import float32_gradients, max_relative_error
    for cell in args.cells:
        for B, I, H in [s for s in args.shapes if s[0] >= 32][-2:]:
            layer64 = _ours(cell, I, H, np.float64)
            x = rng.standard_normal((T, B, I))
            r = rng.standard_normal((T, B, H))
            g64, g32, layer32 = float32_gradients(layer64, x, r)
            module = _theirs(cell, layer32)
            y, _ = module(torch.from_numpy(x.astype(np.float32)))
            (y * torch.from_numpy(r.astype(np.float32))).sum().backward()
            for name in layer64.params:
                ours = max_relative_error(g32[name], g64[name])
                theirs = max_relative_error(getattr(module, name).grad.numpy(), g64[name])
                row = f"| {cell.upper()} | {B}, {I}, {H} | {name} | {ours:.1e} | {theirs:.1e} |"
                print(row, flush=True)
                lines.append(row)


def blas_description():
    try:
        from threadpoolctl import threadpool_info
        return "; ".join(f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')})"
                         for d in threadpool_info() if d.get("user_api") == "blas") or "unknown"
    except ImportError:
        return "threadpoolctl not installed"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

#: the sections ``--sections`` chooses from (all by default)
SECTIONS = ("train", "infer", "stream", "memory", "startup", "flops", "accuracy")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--shapes", default=None, help="e.g. 1x8x32,8x16x64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two smallest shapes, 3 repeats")
    parser.add_argument("--out", default=None, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    command_args = argv if argv is not None else sys.argv[1:]
    args.threads = [int(v) for v in args.threads.split(",")]
    args.cells = [c for c in args.cells.split(",") if c]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x"))
                                                  for s in args.shapes.split(",")]
    if args.quick:
        args.shapes, args.repeats = args.shapes[:2], 3
    sections = {name for name in args.sections.split(",") if name}
    unknown = sorted(sections - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: expected names from {','.join(SECTIONS)}, got "
                     f"{','.join(unknown)}")

    import torch
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    simd = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    lines = ["## Benchmarks", "",
             f"- machine: {cpu_model()}, {os.cpu_count()} cores, {simd}",
             f"- python {platform.python_version()}, numpy {np.__version__}, torch "
             f"{torch.__version__}, BLAS: {blas_description()}",
             f"- OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, "
             f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', 'unset')}",
             f"- command: `{' '.join(['python', 'benchmarks/run.py'] + command_args)}`",
             f"- medians of {args.repeats} runs ({repeats_for(1, 1, args.repeats)} for B * H <= "
             f"{SMALL_ROWS}, {repeats_for(1, LARGE_ROWS, args.repeats)} from B * H = "
             f"{LARGE_ROWS}); "
             "ratio = lstm_np / torch",
             "- 1 thread: lstm_np and torch timed in alternation; 2 threads: in four blocks each "
             f"of half that many runs, after a pause and {WARM_UP} s of untimed calls (each "
             "library's idle worker threads spin on the core the other needs; see "
             "`paired_medians`)",
             "- threads: `torch.set_num_threads(n)`, `threadpool_limits(n)` and "
             "`lstm_np.set_num_threads(n)` (with n = 2, lstm_np runs blocks of rows in two threads "
             "and NumPy's BLAS one thread per block)"]
    print("\n".join(lines), flush=True)
    rng = np.random.default_rng(0)
    train_times = {}
    if "train" in sections:
        train_times = section_compute("train", args, rng, lines)
    if "infer" in sections:
        section_compute("infer", args, rng, lines)
    if "flops" in sections and train_times:
        section_flops(train_times, args, lines)
    if "stream" in sections:
        section_stream(args, rng, lines)
    if "memory" in sections:
        section_memory(args, rng, lines)
    if "startup" in sections:
        section_startup(lines)
    if "accuracy" in sections:
        section_accuracy(args, rng, lines)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
