"""A small model stack: :class:`Linear`, :class:`LastStep` and :class:`Sequential`, with the
same three calls as the recurrent layers.

``Sequential`` chains forward and backward through recurrent and feed-forward layers; its
``params`` are keyed like torch's ``nn.Sequential`` (``"0.weight_ih_l0"``, ``"1.weight"``), and
its state is a list with one entry per recurrent layer (``None`` = zeros), which is what
:class:`~lstm_np.state.StateStore` carries between batches.
"""
from dataclasses import dataclass

import numpy as np

from . import _arrays
from .recurrent import Recurrent


class Linear:
    """``y = x W^T + b`` over the last axis, torch's ``nn.Linear`` (``weight (out, in)``,
    ``bias (out,)``, init ``U(-1/sqrt(in), 1/sqrt(in))``). ``x`` is ``(..., in)``."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, seed=None):
        self.in_features = _arrays.positive_int(in_features, "in_features")
        self.out_features = _arrays.positive_int(out_features, "out_features")
        self.dtype = _arrays.as_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        weight = rng.uniform(-bound, bound, (out_features, in_features))
        self.params = {"weight": weight.astype(self.dtype)}
        if bias:
            self.params["bias"] = rng.uniform(-bound, bound, out_features).astype(self.dtype)

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias="bias" in self.params, dtype=self.dtype.name)

    def __call__(self, x):
        return self.forward(x)[0]

    def forward(self, x):
        """``(y, tape)``; the tape is the input (a copy)."""
        x = _arrays.float_array(x, "Linear input", self.dtype, finite=False)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear input: expected last dimension {self.in_features}, got "
                             f"shape {x.shape}")
        y = x @ self.params["weight"].T
        if "bias" in self.params:
            y += self.params["bias"]
        return y, np.array(x)

    def backward(self, x, dy):
        """``(dx, dparams)`` for the upstream gradient ``dy (..., out)``."""
        flat_x = x.reshape(-1, self.in_features)
        flat_dy = dy.reshape(-1, self.out_features)
        dparams = {"weight": flat_dy.T @ flat_x}
        if "bias" in self.params:
            dparams["bias"] = flat_dy.sum(axis=0, dtype=np.float64).astype(self.dtype)
        return dy @ self.params["weight"], dparams

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}, bias={'bias' in self.params})"


class LastStep:
    """Keeps only the last time step of a sequence: ``(B, T, F) -> (B, F)`` with
    ``batch_first=True``, ``(T, B, F) -> (B, F)`` otherwise. No parameters."""

    def __init__(self, batch_first=True):
        self.batch_first = bool(batch_first)
        self.params = {}

    def config(self):
        return dict(batch_first=self.batch_first)

    def forward(self, x):
        axis = 1 if self.batch_first else 0
        return np.take(x, -1, axis=axis).copy(), (x.shape, axis)

    def backward(self, tape, dy):
        shape, axis = tape
        dx = np.zeros(shape, dy.dtype)
        index = [slice(None)] * len(shape)
        index[axis] = -1
        dx[tuple(index)] = dy
        return dx, {}

    def __repr__(self):
        return f"LastStep(batch_first={self.batch_first})"


@dataclass
class SequentialGradients:
    """``dx``; ``dparams`` keyed like ``Sequential.params``; ``dstates`` (one per recurrent
    layer); ``layers``: each recurrent layer's own :class:`~lstm_np.tape.Gradients` (per-step
    ``dh``/``dc`` for study), ``None`` for the others."""
    dx: np.ndarray
    dparams: dict
    dstates: list
    layers: list


class Sequential:
    """Layers applied in order. Calls:

    - ``y, states = model(x, states=None)``
    - ``y, states, tape = model.forward(x, states=None)``
    - ``grads = model.backward(tape, dy)`` -> :class:`SequentialGradients`

    ``states`` has one entry per recurrent layer (in order), each that layer's ``state``.
    ``params`` is a live view: ``model.params["0.weight_ih_l0"] is model.layers[0].params[...]``.
    """

    def __init__(self, layers):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("Sequential: expected at least one layer, got none")
        for i, layer in enumerate(self.layers):
            if not hasattr(layer, "forward") or not hasattr(layer, "params"):
                raise TypeError(f"Sequential: layer {i} ({type(layer).__name__}) has no "
                                "forward/params")
        self.params = {f"{i}.{name}": value for i, layer in enumerate(self.layers)
                       for name, value in layer.params.items()}

    def recurrent_layers(self):
        """The recurrent layers, in order (these carry state)."""
        return [layer for layer in self.layers if isinstance(layer, Recurrent)]

    @property
    def batch_first(self):
        recurrent = self.recurrent_layers()
        return recurrent[0].batch_first if recurrent else True

    def load_state_dict(self, mapping, strict=True):
        """Load ``"i.name"`` keys into the layers; everything is checked before anything is
        written (each layer's own ``load_state_dict`` validates its part)."""
        unexpected = [k for k in mapping if k not in self.params]
        missing = [k for k in self.params if k not in mapping]
        if unexpected or (strict and missing):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        staged = []
        for i, layer in enumerate(self.layers):
            part = {k.split(".", 1)[1]: v for k, v in mapping.items()
                    if k.split(".", 1)[0] == str(i)}
            for name, value in part.items():
                arr = _arrays.to_numpy(value, f"{i}.{name}")
                want = layer.params[name]
                if arr.shape != want.shape or arr.dtype.kind != "f" or not _arrays.all_finite(arr):
                    raise ValueError(f"{i}.{name}: expected finite floats of shape {want.shape}, "
                                     f"got dtype {arr.dtype} and shape {arr.shape}")
                staged.append((want, arr))
        for want, arr in staged:
            want[...] = arr          # in place, so optimizers holding the arrays stay attached
        return missing, unexpected

    def state_dict(self):
        return {k: v.copy() for k, v in self.params.items()}

    def __call__(self, x, states=None):
        y, states, _ = self._run(x, states, training=False)
        return y, states

    def forward(self, x, states=None):
        return self._run(x, states, training=True)

    def _run(self, x, states, training):
        recurrent = self.recurrent_layers()
        states = [None] * len(recurrent) if states is None else list(states)
        if len(states) != len(recurrent):
            raise ValueError(f"states: expected {len(recurrent)} entries (one per recurrent "
                             f"layer), got {len(states)}")
        out_states, tapes, r = [], [], 0
        for layer in self.layers:
            if isinstance(layer, Recurrent):
                if training:
                    x, s, tape = layer.forward(x, states[r])
                else:
                    x, s = layer(x, states[r])
                    tape = None
                out_states.append(s)
                r += 1
            else:
                x, tape = layer.forward(x)
            tapes.append(tape)
        return x, out_states, tapes

    def backward(self, tapes, dy, dstates=None):
        """Chain the layers' backward from the output gradient ``dy`` (same shape as ``y``);
        ``dstates``: gradients of the final states (one per recurrent layer, ``None`` = zeros)."""
        dy = _arrays.to_numpy(dy, "dy")
        if dy.dtype.kind != "f" or not _arrays.all_finite(dy):
            raise ValueError(f"dy: expected finite floats, got dtype {dy.dtype}"
                             + ("" if dy.dtype.kind != "f" else " with NaN/Inf entries"))
        recurrent = self.recurrent_layers()
        dstates = [None] * len(recurrent) if dstates is None else list(dstates)
        dparams, layer_grads, dstates0 = {}, [None] * len(self.layers), [None] * len(recurrent)
        r = len(recurrent)
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            if isinstance(layer, Recurrent):
                r -= 1
                g = layer._backward(tapes[i], dy, dstates[r], check_finite=False)
                dy, dlayer = g.dx, g.dparams
                dstates0[r] = g.dstate
                layer_grads[i] = g
            else:
                dy, dlayer = layer.backward(tapes[i], dy)
            for name, value in dlayer.items():
                dparams[f"{i}.{name}"] = value
        dparams = {k: dparams[k] for k in self.params}
        return SequentialGradients(dx=dy, dparams=dparams, dstates=dstates0, layers=layer_grads)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
