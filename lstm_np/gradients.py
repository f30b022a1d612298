"""The gradient lab: how gradients flow back through time inside a recurrent layer.

- :func:`gradient_flow`: per-step norms of ``dL/dh_t`` (and ``dL/dc_t`` for the LSTM), per layer
  and direction, for a loss on the last step only.
- :func:`jacobian_norms`: the spectral norm of ``d h_T / d h_t`` for every ``t`` (the factor by
  which a perturbation of the state at ``t`` reaches the last state).
- :func:`gate_saturation`: the fraction of gate activations below 0.05 and above 0.95.

Shapes: ``T`` steps, ``B`` batch, ``H`` hidden, ``L`` layers, ``D`` directions; row ``l * D + d``
as in torch's state layout. Everything here is built on ``layer.forward`` / ``layer.backward``:
the numbers are the library's own BPTT, nothing is re-derived.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class GradientFlow:
    """``dh_norms (L*D, T)`` and ``dc_norms (L*D, T)`` (LSTM, else ``None``): the norm of the
    total gradient reaching each step's state, averaged over the batch. ``loss_direction`` is
    the upstream gradient that was put on the last output."""
    dh_norms: np.ndarray
    dc_norms: np.ndarray
    loss_direction: np.ndarray


def _last_step_gradient(layer, y_shape, direction, time_axis):
    dy = np.zeros(y_shape, layer.dtype)
    index = [slice(None)] * len(y_shape)
    index[time_axis] = -1
    dy[tuple(index)] = direction
    return dy


def _time_axis(layer, x):
    return 1 if (layer.batch_first and np.ndim(x) == 3) else 0


def gradient_flow(layer, x, state=None, seed=0):
    """Norms of ``dL/dh_t`` (and ``dL/dc_t``) at every step for ``L = r . y_T``, a loss on the
    last output only, with ``r`` a random unit vector (seeded) of size ``D*P``.

    Returns :class:`GradientFlow`. Read ``dh_norms[row]`` against ``t``: a straight line on a log
    scale is exponential decay (or growth) of the gradient back through time.
    """
    y, _, tape = layer.forward(x, state)
    r = np.random.default_rng(seed).standard_normal(y.shape[-1])
    r /= np.linalg.norm(r)
    grads = layer.backward(tape, _last_step_gradient(layer, y.shape, r, _time_axis(layer, x)))
    dh = np.linalg.norm(grads.dh, axis=-1).mean(axis=-1)          # (L*D, T)
    dc = None if grads.dc is None else np.linalg.norm(grads.dc, axis=-1).mean(axis=-1)
    return GradientFlow(dh_norms=dh, dc_norms=dc, loss_direction=r)


def jacobian_norms(layer, x, state=None):
    """Spectral norm of ``d h_T / d h_t`` for every step ``t``, ``(B, T)``, for the top layer's
    forward direction (``h`` is that layer's hidden output, ``P`` wide).

    Computed exactly, one backward pass per output unit: with the loss ``h_T[k]``, the per-step
    gradient ``grads.dh[row, t]`` is row ``k`` of the Jacobian ``d h_T / d h_t``. (For the LSTM
    this is the Jacobian with ``c_t`` held fixed, the path through ``h_t`` alone.)
    """
    y, _, tape = layer.forward(x, state)
    P = layer.output_size
    row = (layer.num_layers - 1) * layer.num_directions
    time_axis = _time_axis(layer, x)
    jac = None
    for k in range(P):
        direction = np.zeros(y.shape[-1], layer.dtype)
        direction[k] = 1.0
        g = layer.backward(tape, _last_step_gradient(layer, y.shape, direction, time_axis))
        dh = g.dh[row]                                  # (T, B, P): row k of each Jacobian
        if jac is None:
            jac = np.empty(dh.shape[:2] + (P, P), dh.dtype)
        jac[:, :, k, :] = dh
    return np.linalg.norm(jac, ord=2, axis=(-2, -1)).T  # (B, T)


def gate_saturation(layer, tape, low=0.05, high=0.95):
    """Fraction of each gate's activations below ``low`` and above ``high``, per layer and
    direction: ``{row: {gate: (fraction_low, fraction_high)}}``. Gates: LSTM ``i, f, o``
    (sigmoids) and ``g`` (tanh, reported as ``|g|`` against ``high``), GRU ``r, z`` and ``n``
    (tanh), RNN the hidden state ``h`` (as ``|h|``; for relu the fraction at exactly 0 is
    reported as low). Steps past a sequence's length are left out."""
    names = {4: ("i", "f", "g", "o"), 3: ("r", "z", "n")}
    tanh_gates = {"g", "n"}
    T = tape.lengths.max()
    active = np.arange(T)[:, None] < tape.lengths[None, :]            # (T, B)
    result = {}
    for row, kept in enumerate(tape.steps):
        stats = {}
        if "gates" in kept:
            gates = kept["gates"]
            H = gates.shape[-1] // layer.gate_count
            for k, name in enumerate(names[layer.gate_count]):
                values = gates[:, :, k * H:(k + 1) * H][active]
                if name in tanh_gates:
                    values = np.abs(values)
                stats[name] = (float(np.mean(values < low)), float(np.mean(values > high)))
        else:
            h_seq = kept["h_seq"]
            values = (h_seq[1:] if row % layer.num_directions == 0 else h_seq[:-1])[active]
            if getattr(layer, "nonlinearity", "tanh") == "relu":
                stats["h"] = (float(np.mean(values == 0.0)), float("nan"))
            else:
                values = np.abs(values)
                stats["h"] = (float(np.mean(values < low)), float(np.mean(values > high)))
        result[row] = stats
    return result
