"""The experiments behind the ``lstm-np`` command: stateful vs stateless one-step forecasting.

Protocol (the same for every model):

1. split the series in time order (the last ``test_fraction`` is the test part); fit the
   scaling on the training part only;
2. frame the training part as windows of ``window`` steps with next-step targets at every step;
   **stateful**: :func:`~lstm_np.data.stateful_batches` (``batch_size`` contiguous streams, state
   carried from batch to batch, reset each epoch, never shuffled); **stateless**: the same windows,
   every window starting from zero state, shuffled each epoch;
3. forecast every test value one step ahead. Stateful: run the model over the training part
   with batch size 1 (the state warms up), then carry the state on through the test part,
   feeding the true previous value. Stateless: each forecast sees only the ``window`` values
   before it, from zero state;
4. report the RMSE in the series' own units and in training-standard-deviation units.

The persistence baseline forecasts each value by the previous one.
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .data import Standardizer, stateful_batches
from .losses import mse
from .model import Linear, Sequential
from .optim import Adam
from .recurrent import GRU, LSTM, RNN
from .state import StateStore
from .trainer import Trainer

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


@dataclass
class Settings:
    """Every knob of an experiment (all recorded in the report)."""
    cell: str = "lstm"
    window: int = 3
    hidden: int = 16
    epochs: int = 150
    batch_size: int = 4
    lr: float = 0.01
    test_fraction: float = 0.2
    clip_norm: float = 1.0
    seed: int = 0


@dataclass
class RunResult:
    """One trained model: its test RMSE (series units and standardised), its per-epoch training
    losses, its test forecasts, and how long it took."""
    mode: str
    seed: int
    rmse: float
    rmse_std_units: float
    epoch_losses: list
    forecast: np.ndarray
    seconds: float
    batch_losses: list = field(default_factory=list)


def split(series, test_fraction):
    """``(train, test)`` in time order; raises if either part is too short to be useful."""
    series = np.asarray(series, dtype=np.float64).reshape(-1)
    n_test = int(round(len(series) * test_fraction))
    if not 0 < test_fraction < 1 or n_test < 2 or len(series) - n_test < 10:
        raise ValueError(f"test_fraction={test_fraction} on {len(series)} values leaves "
                         f"{len(series) - n_test} for training and {n_test} for testing")
    return series[:-n_test], series[-n_test:]


def build_model(settings, seed):
    cell = CELLS[settings.cell](1, settings.hidden, batch_first=True, dtype=np.float64, seed=seed)
    head = Linear(settings.hidden, 1, dtype=np.float64, seed=seed + 10_000)
    return Sequential([cell, head])


def _train_windows(z_train, settings):
    """The training windows, laid out for stateful training: ``batch_size`` contiguous streams,
    row ``i`` of batch ``k + 1`` continuing row ``i`` of batch ``k``. Stateless training uses the
    very same windows (shuffled, each from zero state), so the two differ only in the state."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the dropped remainder is a few steps at most
        return stateful_batches(z_train, settings.batch_size, settings.window, dtype=np.float64)


def forecast_stateful(model, z_train, z_test):
    """One-step forecasts of ``z_test`` with state carried from the start of the training part."""
    store = StateStore(model, 1)
    history = np.concatenate([z_train, z_test])[None, :, None]      # (1, N, 1)
    out, _ = model(history[:, :-1], store.read())                    # predicts steps 1..N-1
    return out[0, len(z_train) - 1:, 0]


def forecast_stateless(model, z_train, z_test, window):
    """One-step forecasts of ``z_test``, each from the ``window`` values before it only."""
    full = np.concatenate([z_train, z_test])
    starts = np.arange(len(z_train) - window, len(full) - window)
    x = full[starts[:, None] + np.arange(window)][:, :, None]
    out, _ = model(x)
    return out[:, -1, 0]


def train_one(mode, series, settings, seed):
    """Train one model (``mode`` is ``"stateful"`` or ``"stateless"``) and forecast the test
    part."""
    start = time.perf_counter()
    train, test = split(series, settings.test_fraction)
    scale = Standardizer.fit(train)
    z_train, z_test = scale.transform(train).ravel(), scale.transform(test).ravel()
    x, y = _train_windows(z_train, settings)
    model = build_model(settings, seed)
    stateful = mode == "stateful"
    trainer = Trainer(model, mse, Adam(model.params, lr=settings.lr), stateful=stateful,
                      batch_size=settings.batch_size, clip_norm=settings.clip_norm, seed=seed,
                      progress=False)
    history = trainer.fit(x, y, epochs=settings.epochs)
    if stateful:
        z_pred = forecast_stateful(model, z_train, z_test)
    else:
        z_pred = forecast_stateless(model, z_train, z_test, settings.window)
    pred = scale.inverse(z_pred).ravel()
    rmse = float(np.sqrt(np.mean((pred - test) ** 2)))
    return RunResult(mode=mode, seed=seed, rmse=rmse, rmse_std_units=rmse / float(scale.std[0]),
                     epoch_losses=history.epoch_losses, forecast=pred,
                     seconds=time.perf_counter() - start,
                     batch_losses=[v for epoch in history.batch_losses for v in epoch])


def persistence(series, test_fraction):
    """RMSE of forecasting each test value by the one before it: ``(rmse, std_units, pred)``."""
    train, test = split(series, test_fraction)
    pred = np.concatenate([train[-1:], test[:-1]])
    rmse = float(np.sqrt(np.mean((pred - test) ** 2)))
    return rmse, rmse / float(train.std()), pred


def autoregression(series, order, test_fraction):
    """A linear AR(``order``) fitted by least squares on the standardised training part: the
    strongest simple baseline for a model that sees ``order`` past values.
    Returns ``(rmse, std_units, pred)``."""
    train, test = split(series, test_fraction)
    scale = Standardizer.fit(train)
    z = scale.transform(np.concatenate([train, test])).ravel()
    idx = np.arange(order, len(train))[:, None] - np.arange(1, order + 1)
    design = np.column_stack([z[idx], np.ones(len(idx))])
    coef, *_ = np.linalg.lstsq(design, z[order:len(train)], rcond=None)
    t_idx = np.arange(len(train), len(z))[:, None] - np.arange(1, order + 1)
    pred = scale.inverse(np.column_stack([z[t_idx], np.ones(len(t_idx))]) @ coef).ravel()
    rmse = float(np.sqrt(np.mean((pred - test) ** 2)))
    return rmse, rmse / float(scale.std[0]), pred


def summarize(values):
    """``(mean, std)`` over seeds (std with ``ddof=1``; 0 for a single run)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def demo(series, settings, cells, repeats, on_progress=None):
    """Stateless and stateful models for each cell over ``repeats`` seeds, plus persistence.
    Returns a JSON-able dict of every figure, and the runs themselves."""
    rows, runs = [], {}
    total = len(cells) * 2 * repeats
    done = 0
    for cell in cells:
        cell_settings = Settings(**{**settings.__dict__, "cell": cell})
        for mode in ("stateless", "stateful"):
            results = []
            for r in range(repeats):
                results.append(train_one(mode, series, cell_settings, settings.seed + r))
                done += 1
                if on_progress:
                    on_progress(done, total)
            runs[(cell, mode)] = results
            mean, std = summarize([res.rmse for res in results])
            mean_z, std_z = summarize([res.rmse_std_units for res in results])
            rows.append({"model": f"{mode} {cell.upper()}", "cell": cell, "mode": mode,
                         "rmse_mean": mean, "rmse_std": std,
                         "rmse_std_units_mean": mean_z, "rmse_std_units_std": std_z,
                         "rmse_per_seed": [res.rmse for res in results],
                         "seconds_per_run": summarize([res.seconds for res in results])[0]})
    for label, (base, base_z, _) in (
            ("persistence", persistence(series, settings.test_fraction)),
            (f"linear AR({settings.window})", autoregression(series, settings.window,
                                                             settings.test_fraction))):
        rows.append({"model": label, "cell": None, "mode": "baseline", "rmse_mean": base,
                     "rmse_std": 0.0, "rmse_std_units_mean": base_z, "rmse_std_units_std": 0.0,
                     "rmse_per_seed": [base], "seconds_per_run": 0.0})
    return {"settings": settings.__dict__, "cells": list(cells), "repeats": repeats,
            "rows": rows}, runs


def batch_size_study(series, settings, batch_sizes, repeats, on_progress=None):
    """Stateful minus stateless test RMSE (standardised units) for each batch size, over
    ``repeats`` seeds.

    The largest batch size in a sweep that reaches one batch per epoch puts one window per
    stream: there the two trainings are the same computation (stateless shuffling only permutes
    the rows inside the single batch), which the study checks by comparing their training
    losses; what still differs is how each model runs on the test part (state carried through
    the series, or one window from zero state).
    """
    train, _ = split(series, settings.test_fraction)
    pairs = len(train) - 1                      # (input, next value) pairs in the training part
    windows_total = pairs // settings.window
    rows = []
    total = len(batch_sizes) * repeats
    done = 0
    for b in batch_sizes:
        if b > windows_total:
            raise ValueError(f"batch size {b} exceeds the {windows_total} windows of the "
                             "training part")
        s = Settings(**{**settings.__dict__, "batch_size": b})
        diffs, sf, sl, loss_gaps = [], [], [], []
        for r in range(repeats):
            a = train_one("stateful", series, s, settings.seed + r)
            c = train_one("stateless", series, s, settings.seed + r)
            diffs.append(a.rmse_std_units - c.rmse_std_units)
            sf.append(a.rmse_std_units)
            sl.append(c.rmse_std_units)
            loss_gaps.append(float(np.max(np.abs(np.subtract(a.batch_losses, c.batch_losses)))))
            done += 1
            if on_progress:
                on_progress(done, total)
        mean, std = summarize(diffs)
        rows.append({"batch_size": b, "batches_per_epoch": (pairs // b) // settings.window,
                     "stateful_rmse": summarize(sf), "stateless_rmse": summarize(sl),
                     "difference_mean": mean, "difference_std": std,
                     "difference_per_seed": diffs,
                     "training_loss_max_gap": max(loss_gaps)})
    return {"settings": settings.__dict__, "repeats": repeats, "rows": rows}


def verdict(study):
    """Plain words on what the batch-size study supports, from its own numbers."""
    rows = study["rows"]
    lines = []
    for row in rows:
        mean, std, n = row["difference_mean"], row["difference_std"], study["repeats"]
        half = 2 * std / math.sqrt(n) if n > 1 else float("inf")
        if n < 2:
            word = "cannot tell (one seed)"
        elif abs(mean) <= half:
            word = "no difference resolved (|mean| within 2 standard errors)"
        elif mean < 0:
            word = "stateful better"
        else:
            word = "stateless better"
        lines.append(f"batch size {row['batch_size']:>3} ({row['batches_per_epoch']:>3} batches "
                     f"per epoch): stateful - stateless = {mean:+.3f} +- {std:.3f} -> {word}")
    return lines
