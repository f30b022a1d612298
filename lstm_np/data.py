"""Data layouts for recurrent training, and the bundled series.

- :func:`stateful_batches`: one long series (or one per stream) cut into ``batch_size``
  contiguous streams, so that row ``i`` of batch ``k + 1`` continues row ``i`` of batch ``k``.
- :func:`windows`: the stateless framing, every window of ``window`` steps with the next
  ``horizon`` values as its target.
- :func:`load_sunspots`, :func:`load_elnino`: small public-domain series shipped with the package
  (NOAA NGDC / NCEI and NOAA CPC, via statsmodels; see ``datasets/PROVENANCE.md``).
- :class:`Standardizer`: scaling fitted on the training part only.

Shapes: ``N`` time steps of the series, ``F`` features, ``B`` batch size (streams), ``T``
``seq_len``, ``K`` batches per epoch. All outputs are sample-major ``(rows, T, F)``.
"""
import csv
import os
import warnings
from dataclasses import dataclass

import numpy as np

from . import _arrays

_DATA_DIR = os.path.join(os.path.dirname(__file__), "datasets")


def _as_series(series, what="series"):
    arr = _arrays.to_numpy(series, what)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{what}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64) if arr.dtype.kind != "f" else arr
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected shape (N,) or (N, F), got {arr.shape}")
    if not _arrays.all_finite(arr):
        raise ValueError(f"{what}: expected finite values, got NaN/Inf")
    return arr


def stateful_batches(series, batch_size, seq_len, remainder="drop", dtype=np.float32):
    """Inputs and next-step targets laid out for stateful training.

    ``series``: one array ``(N,)`` or ``(N, F)``, which is split into ``batch_size`` contiguous
    streams of equal length, or a list of ``batch_size`` arrays, one per stream (cut to the
    shortest). Stream ``i`` yields input ``s[t]`` and target ``s[t + 1]``; its ``K * seq_len``
    steps are cut into ``K`` windows. Returns ``x, y``, each ``(K * B, T, F)``, where rows
    ``[k B, (k + 1) B)`` are batch ``k`` and row ``k B + i`` is window ``k`` of stream ``i``: so
    row ``i`` of batch ``k + 1`` starts exactly where row ``i`` of batch ``k`` ended.

    ``remainder``: what to do with steps that do not fill a whole window in every stream:
    ``"drop"`` (with a warning saying how many) or ``"error"``.
    """
    batch_size = _arrays.positive_int(batch_size, "batch_size")
    seq_len = _arrays.positive_int(seq_len, "seq_len")
    if remainder not in ("drop", "error"):
        raise ValueError(f"remainder: expected 'drop' or 'error', got {remainder!r}")
    if isinstance(series, (list, tuple)):
        if len(series) != batch_size:
            raise ValueError(f"series: a list gives one stream per batch row, expected "
                             f"{batch_size} series, got {len(series)}")
        streams = [_as_series(s, f"series[{i}]") for i, s in enumerate(series)]
        if len({s.shape[1] for s in streams}) != 1:
            raise ValueError("series: every stream must have the same number of features")
        steps = min(s.shape[0] for s in streams) - 1      # (input, target) pairs per stream
        total = sum(s.shape[0] - 1 for s in streams)
    else:
        whole = _as_series(series)
        pairs = whole.shape[0] - 1
        steps = pairs // batch_size
        streams = [whole[i * steps:(i + 1) * steps + 1] for i in range(batch_size)]
        total = pairs
    K = steps // seq_len
    if K < 1:
        raise ValueError(f"series: too short for batch_size={batch_size} streams of one "
                         f"seq_len={seq_len} window each ({steps} steps per stream)")
    used = batch_size * K * seq_len
    if used < total:
        msg = (f"stateful_batches: {total - used} of {total} (input, target) steps do not fill a "
               f"whole window in every stream and are not used")
        if remainder == "error":
            raise ValueError(msg + "; pick batch_size and seq_len that divide the series, or "
                             "remainder='drop'")
        warnings.warn(msg, stacklevel=2)
    F = streams[0].shape[1]
    x = np.empty((K * batch_size, seq_len, F), dtype)
    y = np.empty_like(x)
    for i, s in enumerate(streams):
        for k in range(K):
            start = k * seq_len
            x[k * batch_size + i] = s[start:start + seq_len]
            y[k * batch_size + i] = s[start + 1:start + seq_len + 1]
    return x, y


def windows(series, window, horizon=1, dtype=np.float32):
    """Every window of ``window`` steps and the ``horizon`` values after it (the stateless
    framing). Returns ``x (M, window, F)`` and ``y (M, horizon, F)``, ``M = N - window - horizon
    + 1``."""
    s = _as_series(series)
    window = _arrays.positive_int(window, "window")
    horizon = _arrays.positive_int(horizon, "horizon")
    M = s.shape[0] - window - horizon + 1
    if M < 1:
        raise ValueError(f"series: {s.shape[0]} steps are too few for window={window} and "
                         f"horizon={horizon}")
    idx = np.arange(M)[:, None]
    x = s[idx + np.arange(window)]
    y = s[idx + window + np.arange(horizon)]
    return x.astype(dtype), y.astype(dtype)


@dataclass
class Standardizer:
    """``(v - mean) / std`` per feature, fitted on the training part only."""
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, train):
        s = _as_series(train, "train")
        std = s.std(axis=0)
        return cls(s.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, v):
        return (np.asarray(v, dtype=np.float64).reshape(-1, self.mean.size) - self.mean) / self.std

    def inverse(self, v):
        return np.asarray(v, dtype=np.float64).reshape(-1, self.mean.size) * self.std + self.mean


def _read_csv(name):
    with open(os.path.join(_DATA_DIR, name), newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def load_sunspots():
    """Yearly mean sunspot number 1700-2008: ``(years (309,) int, values (309,) float64)``.
    NOAA NGDC / NCEI via statsmodels; public domain."""
    _, rows = _read_csv("sunspots_yearly.csv")
    return (np.array([int(r[0]) for r in rows]), np.array([float(r[1]) for r in rows]))


def load_elnino():
    """Monthly Nino 1+2 sea-surface temperature 1950-2010 in deg C:
    ``(months (732,) str 'YYYY-MM', values (732,) float64)``. NOAA CPC via statsmodels."""
    _, rows = _read_csv("elnino_nino12_monthly.csv")
    return (np.array([r[0] for r in rows]), np.array([float(r[1]) for r in rows]))
