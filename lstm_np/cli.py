"""The ``lstm-np`` command (also ``python -m lstm_np``).

    lstm-np demo [--cells lstm,gru,rnn] [--csv FILE --column NAME] [--repeats 3] [--report DIR]
    lstm-np study batch-size [--batch-sizes 1,2,4,...] [--repeats 3] [--report DIR]
    lstm-np gradients [--cells lstm,gru,rnn] [--steps 200] [--report DIR]

Each prints a table and writes a report folder: a JSON of every figure and, with matplotlib
installed (``pip install "lstm_np[plot]"``), PNG pictures.
"""
import argparse
import csv
import json
import os
import sys
import time

import numpy as np

from . import _arrays, experiments, gradients, plots
from .data import load_sunspots
from .experiments import Settings


def _progress(label, quiet):
    """A one-line progress printer on stderr (only on a terminal, unless quiet)."""
    if quiet or not sys.stderr.isatty():
        return None
    start = time.perf_counter()

    def show(done, total):
        elapsed = time.perf_counter() - start
        bar = "#" * int(30 * done / total)
        sys.stderr.write(f"\r{label} [{bar:<30}] {done}/{total} runs, {elapsed:.0f}s")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def load_series(csv_path=None, column=None):
    """``(name, time labels, values)``: the bundled yearly sunspots, or a CSV column."""
    if csv_path is None:
        years, values = load_sunspots()
        return "yearly sunspot number (NOAA NGDC / NCEI via statsmodels)", years, values
    if column is None:
        raise SystemExit("--csv needs --column NAME (the column to forecast)")
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise SystemExit(f"{csv_path}: no column {column!r}; columns are {reader.fieldnames}")
        values = []
        for line, row in enumerate(reader, start=2):
            try:
                values.append(float(row[column]))
            except (TypeError, ValueError):
                raise SystemExit(f"{csv_path}:{line}: {column}={row[column]!r} is not a "
                                 f"number") from None
    values = np.array(values)
    if not _arrays.all_finite(values):
        raise SystemExit(f"{csv_path}: column {column!r} has NaN/Inf values")
    return f"{os.path.basename(csv_path)}:{column}", np.arange(len(values)), values


def _settings(args, **overrides):
    fields = {k: getattr(args, k) for k in ("window", "hidden", "epochs", "batch_size", "lr",
                                            "test_fraction", "seed") if hasattr(args, k)}
    fields.update(overrides)
    return Settings(**fields)


def _write_json(folder, name, payload):
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)
    return path


def _no_plots_note():
    return "(no pictures: matplotlib is not installed; pip install \"lstm_np[plot]\" for them)"


def _finish(lines, folder, json_name, report):
    """Write the report's JSON, print the table, return the report."""
    _write_json(folder, json_name, report)
    lines.append(f"report: {folder}")
    print("\n".join(lines))
    return report


# --------------------------------------------------------------------------- demo
def run_demo(args):
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for cell in cells:
        if cell not in experiments.CELLS:
            raise SystemExit(f"--cells: unknown cell {cell!r} (lstm, gru or rnn)")
    name, labels, series = load_series(args.csv, args.column)
    settings = _settings(args)
    report, runs = experiments.demo(series, settings, cells, args.repeats,
                                    _progress("demo", args.quiet))
    report["series"] = name
    folder = plots.ensure_folder(args.report)
    lines = [f"One-step forecasts of {name}: window {settings.window}, hidden {settings.hidden}, "
             f"{settings.epochs} epochs, batch {settings.batch_size}, last "
             f"{settings.test_fraction:.0%} as test, {args.repeats} seeds",
             "",
             "| model | test RMSE | test RMSE (std units) |",
             "| --- | ---: | ---: |"]
    for row in report["rows"]:
        lines.append(f"| {row['model']} | {row['rmse_mean']:.3f} +- {row['rmse_std']:.3f} | "
                     f"{row['rmse_std_units_mean']:.3f} +- {row['rmse_std_units_std']:.3f} |")
    lines.append("")
    by_key = {(r["cell"], r["mode"]): r for r in report["rows"]}
    for cell in cells:
        sf, sl = by_key[(cell, "stateful")], by_key[(cell, "stateless")]
        diff = np.subtract(sf["rmse_per_seed"], sl["rmse_per_seed"])
        mean, std = experiments.summarize(diff)
        lines.append(f"{cell.upper()}: stateful - stateless = {mean:+.3f} +- {std:.3f} (RMSE, "
                     f"per-seed differences over {args.repeats} seeds)")
    report["files"] = {"json": os.path.join(folder, "demo.json")}
    if plots.available():
        train, test = experiments.split(series, settings.test_fraction)
        t = labels[len(train):]
        forecasts = {f"{mode} {cell.upper()}": runs[(cell, mode)][0].forecast
                     for cell in cells for mode in ("stateless", "stateful")}
        forecasts["persistence"] = experiments.persistence(series, settings.test_fraction)[2]
        report["files"]["forecast_png"] = plots.forecast_figure(
            os.path.join(folder, "forecast.png"), t, test, forecasts,
            f"{name}: one-step forecasts on the test part (seed {settings.seed})")
        curves = {f"{mode} {cell.upper()}": runs[(cell, mode)][0].epoch_losses
                  for cell in cells for mode in ("stateless", "stateful")}
        report["files"]["loss_png"] = plots.loss_figure(
            os.path.join(folder, "loss.png"), curves, "training loss")
    else:
        lines.append(_no_plots_note())
    return _finish(lines, folder, "demo.json", report)


# --------------------------------------------------------------------------- study
def run_study(args):
    if args.what != "batch-size":
        raise SystemExit(f"unknown study {args.what!r} (batch-size)")
    name, _, series = load_series(args.csv, args.column)
    settings = _settings(args, cell=args.cell)
    train, _ = experiments.split(series, settings.test_fraction)
    largest = (len(train) - 1) // settings.window          # one window per stream
    if args.batch_sizes:
        sizes = [int(v) for v in args.batch_sizes.split(",")]
    else:
        sizes = [b for b in (1, 2, 4, 8, 16, 32, 64) if b < largest] + [largest]
    study = experiments.batch_size_study(series, settings, sizes, args.repeats,
                                         _progress("study", args.quiet))
    study["series"] = name
    folder = plots.ensure_folder(args.report)
    lines = [f"Stateful vs stateless {settings.cell.upper()} on {name}, window "
             f"{settings.window}, {settings.epochs} epochs, {args.repeats} seeds; test RMSE in "
             "standard-deviation units", "",
             "| batch size | batches/epoch | stateful | stateless | stateful - stateless | "
             "training-loss gap (1 batch/epoch) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in study["rows"]:
        lines.append(f"| {row['batch_size']} | {row['batches_per_epoch']} | "
                     f"{row['stateful_rmse'][0]:.3f} +- {row['stateful_rmse'][1]:.3f} | "
                     f"{row['stateless_rmse'][0]:.3f} +- {row['stateless_rmse'][1]:.3f} | "
                     f"{row['difference_mean']:+.3f} +- {row['difference_std']:.3f} | "
                     + (f"{row['training_loss_max_gap']:.1e} |" if row["batches_per_epoch"] == 1
                        else "- |"))
    lines += ["", "What the data support:"] + ["  " + v for v in experiments.verdict(study)]
    lines += ["  At one batch per epoch the two trainings are one computation (the training-loss",
              "  gap is float round-off from the row order); what differs there is only how each",
              "  model runs on the test part (state carried through the series, or one window",
              "  from zero state). A trend needs differences larger than their spread; with few",
              "  seeds, read the +- before the sign."]
    study["verdict"] = experiments.verdict(study)
    study["files"] = {"json": os.path.join(folder, "study_batch_size.json")}
    if plots.available():
        study["files"]["png"] = plots.study_figure(
            os.path.join(folder, "study_batch_size.png"), [r["batch_size"] for r in study["rows"]],
            [r["difference_mean"] for r in study["rows"]],
            [r["difference_std"] for r in study["rows"]])
    else:
        lines.append(_no_plots_note())
    return _finish(lines, folder, "study_batch_size.json", study)


# --------------------------------------------------------------------------- gradients
def run_gradients(args):
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.steps, 1, args.input_size))
    flows, report = {}, {"steps": args.steps, "hidden": args.hidden, "layers": args.layers,
                         "seq_len": args.seq_len, "cells": {}}
    lines = [f"|dL/dh_t| for a loss on the last of {args.steps} steps (hidden {args.hidden}, "
             f"{args.layers} layers, random input, seed {args.seed}); top layer", "",
             "| cell | t = T-1 | T-10 | T-50 | T-100 | factor per step back | saturated gates |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for cell in cells:
        if cell not in experiments.CELLS:
            raise SystemExit(f"--cells: unknown cell {cell!r} (lstm, gru or rnn)")
        layer = experiments.CELLS[cell](args.input_size, args.hidden, num_layers=args.layers,
                                        dtype=np.float64, seed=args.seed)
        flow = gradients.gradient_flow(layer, x, seed=args.seed)
        _, _, tape = layer.forward(x)
        saturation = gradients.gate_saturation(layer, tape)
        top = flow.dh_norms[-1]
        T = len(top)
        pick = [top[max(T - k, 0)] for k in (1, 10, 50, 100)]
        tail = top[max(T - 100, 0):T - 1]
        # geometric rate of change of |dL/dh_t| per step going back in time (fit on the last 100)
        slope = float(np.exp(-np.polyfit(np.arange(len(tail)), np.log(tail + 1e-300), 1)[0])) \
            if len(tail) > 2 else float("nan")
        sat = saturation[len(saturation) - 1]
        sat_text = ", ".join(f"{g}: {lo:.0%}<.05 {hi:.0%}>.95" for g, (lo, hi) in sat.items())
        lines.append(f"| {cell.upper()} | " + " | ".join(f"{v:.2e}" for v in pick)
                     + f" | x{slope:.3f} | {sat_text} |")
        flows[cell.upper()] = flow.dh_norms
        dc_norms = None if flow.dc_norms is None else flow.dc_norms.tolist()
        report["cells"][cell] = {"dh_norms": flow.dh_norms.tolist(), "dc_norms": dc_norms,
                                 "per_step_factor": slope, "gate_saturation": {
                                     str(k): v for k, v in saturation.items()}}
    boundary = args.steps - args.seq_len
    lines += ["", f"A stateful run with seq_len={args.seq_len} cuts this at t = {boundary}: no "
              "gradient reaches the steps before the current batch, however large it would be."]
    folder = plots.ensure_folder(args.report)
    report["files"] = {"json": os.path.join(folder, "gradients.json")}
    if plots.available():
        report["files"]["png"] = plots.gradient_figure(os.path.join(folder, "gradients.png"),
                                                       flows, boundary)
    else:
        lines.append(_no_plots_note())
    return _finish(lines, folder, "gradients.json", report)


# --------------------------------------------------------------------------- parser
def _add_training_options(p, epochs):
    p.add_argument("--csv", help="a CSV file to forecast instead of the bundled sunspots")
    p.add_argument("--column", help="the CSV column to forecast")
    p.add_argument("--window", type=int, default=3, help="input window (steps), default 3")
    p.add_argument("--hidden", type=int, default=16, help="hidden size, default 16")
    p.add_argument("--epochs", type=int, default=epochs, help=f"epochs, default {epochs}")
    p.add_argument("--batch-size", type=int, default=4, dest="batch_size",
                   help="batch size = number of stateful streams, default 4")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate, default 0.01")
    p.add_argument("--test-fraction", type=float, default=0.2, dest="test_fraction")
    p.add_argument("--repeats", type=int, default=3, help="seeds per model, default 3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser():
    parser = argparse.ArgumentParser(prog="lstm-np", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="stateless vs stateful forecasters and a persistence baseline")
    _add_training_options(p, epochs=150)
    p.add_argument("--cells", "--cell", default="lstm", help="lstm, gru, rnn or a list")
    p.add_argument("--report", default="lstm_np_report", help="report folder")
    p.set_defaults(func=run_demo)

    p = sub.add_parser("study", help="studies: batch-size")
    p.add_argument("what", choices=["batch-size"])
    _add_training_options(p, epochs=100)
    p.add_argument("--cell", default="lstm", choices=sorted(experiments.CELLS))
    p.add_argument("--batch-sizes", default=None, dest="batch_sizes",
                   help="comma list; default powers of two up to one batch per epoch")
    p.add_argument("--report", default="lstm_np_report", help="report folder")
    p.set_defaults(func=run_study)

    p = sub.add_parser("gradients", help="how gradients decay back through time, per cell")
    p.add_argument("--cells", default="lstm,gru,rnn")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--input-size", type=int, default=4, dest="input_size")
    p.add_argument("--seq-len", type=int, default=50, dest="seq_len",
                   help="the stateful window whose boundary is marked, default 50")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", default="lstm_np_report", help="report folder")
    p.set_defaults(func=run_gradients)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
