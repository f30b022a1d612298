"""Finite-difference gradient check of a recurrent layer's hand-written backward.

The loss is ``L = sum(y * dy) + sum(state_n * dstate)`` with random ``dy`` and ``dstate`` (so
every output and both final states carry gradient), and every entry of ``x``, of the initial
state and of each parameter is perturbed by ``+-eps`` (central differences). Run it in float64:
in float32 the difference quotient has only ~3 correct digits.
"""
from dataclasses import dataclass

import numpy as np


def max_relative_error(actual, expected):
    """``max |actual - expected| / max |expected|``: the error relative to the array's scale
    (0 when both are exactly zero)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    diff = np.max(np.abs(actual - expected)) if actual.size else 0.0
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    if diff == 0.0:
        return 0.0
    return float(diff / scale) if scale > 0 else float("inf")


def float32_gradients(layer64, x, dy):
    """How far float32 arithmetic moves the parameter gradients: ``(g64, g32, layer32)``, the
    gradients of ``L = sum(y * dy)`` from the float64 ``layer64`` and from ``layer32``, a float32
    copy of it (same architecture, parameters rounded to float32), each a dict name -> array.
    ``x (T, B, I)`` and ``dy`` (the shape of ``y``) are float64, rounded for the float32 run.
    Compare entry by entry with :func:`max_relative_error` (the benchmark and the tests set
    torch's float32 gradients of ``layer32`` beside them)."""
    layer32 = type(layer64)(**{**layer64.config(), "dtype": np.float32})
    layer32.load_state_dict(layer64.params)
    _, _, tape = layer64.forward(x)
    g64 = layer64.backward(tape, dy).dparams
    _, _, tape = layer32.forward(x.astype(np.float32))
    g32 = layer32.backward(tape, dy.astype(np.float32)).dparams
    return g64, g32, layer32


@dataclass
class GradcheckResult:
    """``errors``: name -> max relative error between analytic and numeric gradient;
    ``ok``: all errors within ``tolerance``."""
    errors: dict
    tolerance: float

    @property
    def ok(self):
        return all(e <= self.tolerance for e in self.errors.values())

    @property
    def worst(self):
        return max(self.errors.items(), key=lambda kv: kv[1])

    def __repr__(self):
        rows = ", ".join(f"{k}: {v:.1e}" for k, v in self.errors.items())
        return f"GradcheckResult(ok={self.ok}, tolerance={self.tolerance:g}, {rows})"


def _flat_state(state):
    return list(state) if isinstance(state, tuple) else [state]


def gradcheck(layer, x, state=None, lengths=None, eps=1e-6, tolerance=1e-6, seed=0,
              max_entries=None):
    """Compare ``layer.backward`` with central differences of ``layer.forward``.

    ``layer``: a float64 ``LSTM``/``GRU``/``RNN``. ``x``, ``state``, ``lengths``: as for
    ``layer.forward``. Dropout, if any, uses a fixed mask (the RNG is re-seeded per evaluation).
    ``max_entries``: check at most this many randomly chosen entries per array (``None``: all).
    Returns a :class:`GradcheckResult` with one error per parameter and for ``x`` and each state
    component (``h0``, ``c0``).
    """
    if layer.dtype != np.float64:
        raise TypeError(f"gradcheck: expected a float64 layer, got {layer.dtype} "
                        "(finite differences in float32 cannot resolve the gradient)")
    pick = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    y, state_n, _ = layer.forward(x, state, lengths, rng=np.random.default_rng(seed))
    dy = pick.standard_normal(y.shape)
    dstate_parts = [pick.standard_normal(s.shape) for s in _flat_state(state_n)]
    dstate = tuple(dstate_parts) if isinstance(state_n, tuple) else dstate_parts[0]
    if state is None:
        state = tuple(np.zeros_like(s) for s in _flat_state(state_n))
        state = state if isinstance(state_n, tuple) else state[0]
    state_parts = [np.array(s, dtype=np.float64) for s in _flat_state(state)]

    def pack(parts):
        return tuple(parts) if isinstance(state_n, tuple) else parts[0]

    def loss():
        yy, ss, _ = layer.forward(x, pack(state_parts), lengths, rng=np.random.default_rng(seed))
        return float(np.sum(yy * dy) + sum(np.sum(a * b) for a, b in
                                           zip(_flat_state(ss), dstate_parts)))

    _, _, tape = layer.forward(x, pack(state_parts), lengths, rng=np.random.default_rng(seed))
    grads = layer.backward(tape, dy, dstate)
    targets = {"x": (x, grads.dx)}
    for name, arr, g in zip(layer.state_names, state_parts, _flat_state(grads.dstate)):
        targets[f"{name}0"] = (arr, g)
    for name, arr in layer.params.items():
        targets[name] = (arr, grads.dparams[name])

    errors = {}
    for name, (arr, analytic) in targets.items():
        flat = arr.reshape(-1)
        idx = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            idx = pick.choice(flat.size, max_entries, replace=False)
        numeric = np.empty(idx.size)
        for n, i in enumerate(idx):
            keep = flat[i]
            flat[i] = keep + eps
            up = loss()
            flat[i] = keep - eps
            down = loss()
            flat[i] = keep
            numeric[n] = (up - down) / (2 * eps)
        errors[name] = max_relative_error(np.asarray(analytic).reshape(-1)[idx], numeric)
    return GradcheckResult(errors, tolerance)
