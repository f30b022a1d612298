"""Side-by-side timings of lstm_np and torch in one process, with the same thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py [--threads 1] \
        [--cells lstm,gru,rnn] [--dtypes float32,float64] [--repeats 7] [--out FILE.md]

Training step = forward + backward of ``sum(y * r)`` over T = 100 steps with a random ``r``.
Each cell of the table is the median of ``--repeats`` timed runs after one warm-up run; the ratio
is lstm_np / torch (below 1: lstm_np is faster). The machine is shared and noisy: read the ratios,
not the absolute times, and re-run before trusting a single row.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

SHAPES = [(1, 8, 32), (8, 16, 64), (32, 32, 128), (64, 64, 256), (128, 128, 512)]
T = 100


def median_time(fn, repeats):
    fn()  # warm-up: compilation, page faults, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def lstm_np_training(cell, B, I, H, dtype, rng):
    import lstm_np
    cls = {"lstm": lstm_np.LSTM, "gru": lstm_np.GRU, "rnn": lstm_np.RNN}[cell]
    layer = cls(I, H, dtype=dtype, seed=0)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    r = rng.standard_normal((T, B, H)).astype(dtype)

    def step():
        _, _, tape = layer.forward(x)
        layer.backward(tape, r)
    return layer, step


def torch_training(cell, B, I, H, dtype, layer, rng):
    import torch
    tdt = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    module = cls(I, H, dtype=tdt)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.params.items()})
    x = torch.from_numpy(rng.standard_normal((T, B, I)).astype(dtype)).requires_grad_(True)
    r = torch.from_numpy(rng.standard_normal((T, B, H)).astype(dtype))

    def step():
        module.zero_grad(set_to_none=True)
        y, _ = module(x)
        (y * r).sum().backward()
    return step


def blas_description():
    try:
        from threadpoolctl import threadpool_info
        info = [f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')}, "
                f"{d.get('num_threads')} threads)" for d in threadpool_info()
                if d.get("user_api") == "blas"]
        return "; ".join(info) or "unknown"
    except ImportError:
        return "threadpoolctl not installed"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", default=None, help="e.g. 1x8x32,8x16x64")
    parser.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(args.threads)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x"))
                                             for s in args.shapes.split(",")]
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}",
             f"BLAS: {blas_description()}; threads: {args.threads}; "
             f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}",
             "", "Training step (forward + backward of sum(y * r)), T = 100, median of "
             f"{args.repeats} runs", "",
             "| cell | dtype | B, I, H | lstm_np ms | torch ms | ratio |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    print("\n".join(lines), flush=True)
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=args.threads):
        for cell in args.cells.split(","):
            for dname in args.dtypes.split(","):
                dtype = {"float32": np.float32, "float64": np.float64}[dname]
                for B, I, H in shapes:
                    layer, ours = lstm_np_training(cell, B, I, H, dtype, rng)
                    theirs = torch_training(cell, B, I, H, dtype, layer, rng)
                    reps = args.repeats if B * H < 32768 else max(3, args.repeats // 2)
                    t_ours = median_time(ours, reps)
                    t_theirs = median_time(theirs, reps)
                    row = (f"| {cell.upper()} | {dname} | {B}, {I}, {H} | {t_ours * 1e3:.3g} | "
                           f"{t_theirs * 1e3:.3g} | {t_ours / t_theirs:.2f} |")
                    print(row, flush=True)
                    lines.append(row)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
