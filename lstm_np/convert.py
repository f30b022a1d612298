"""Weights in and out of torch, Keras and ONNX layouts, as plain numpy arrays.

No framework is imported: a torch module is read through its attributes and ``state_dict()``,
Keras weights are dicts of arrays, ONNX weights are the operator's ``W``, ``R``, ``B`` arrays.
Only :func:`load_onnx` (reading a ``.onnx`` file) needs the optional ``onnx`` package.

Shapes: ``I`` input, ``H`` hidden (Keras ``U``), ``D`` directions, ``G`` gates (4 LSTM, 3 GRU,
1 RNN). Gate orders:

================  ==================  ==================  ==================
layout            LSTM                GRU                 bias
================  ==================  ==================  ==================
torch / lstm_np   i, f, g, o          r, z, n             ``b_ih`` and ``b_hh``
Keras             i, f, c, o          z, r, h             one ``(4U,)``; GRU ``(2, 3U)`` if
                                                          ``reset_after`` else ``(3U,)``
ONNX              i, o, f, c          z, r, h             ``B = [Wb, Rb]`` ``(D, 2GH)``
================  ==================  ==================  ==================

Keras and ONNX layers hold one layer each: a stacked lstm_np layer converts to a list with one
entry per layer (Keras: per layer and direction, forward first, as ``Bidirectional`` keeps them).
"""
import numpy as np

from . import _arrays
from .recurrent import GRU, LSTM, RNN

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}

# block orders: foreign_blocks = torch_blocks[TO_X]; torch_blocks = foreign_blocks[FROM_X]
_KERAS_GRU = [1, 0, 2]                   # z, r, h  <->  r, z, n (its own inverse)
_ONNX_LSTM_TO = [0, 3, 1, 2]             # i, o, f, c from i, f, g, o
_ONNX_LSTM_FROM = [0, 2, 3, 1]           # i, f, g, o from i, o, f, c
_ONNX_GRU = [1, 0, 2]


def _blocks(array, order, axis=0):
    """Reorder the gate blocks of ``array`` along ``axis``."""
    parts = np.split(np.asarray(array), len(order), axis=axis)
    return np.concatenate([parts[k] for k in order], axis=axis)


def _cell_name(layer):
    for name, cls in _CELLS.items():
        if type(layer) is cls:
            return name
    raise TypeError(f"expected an lstm_np LSTM, GRU or RNN, got {type(layer).__name__}")


def _float_dtype(*arrays):
    for a in arrays:
        if np.asarray(a).dtype in (np.float32, np.float64):
            return np.asarray(a).dtype
    return np.dtype(np.float32)


# --------------------------------------------------------------------------- torch
def to_torch_state_dict(layer):
    """torch's ``state_dict()`` of ``layer`` as numpy arrays (the keys, shapes and order of
    ``torch.nn.LSTM/GRU/RNN``): ``module.load_state_dict({k: torch.from_numpy(v) ...})``."""
    if isinstance(layer, GRU) and not layer.reset_after:
        raise ValueError("to_torch_state_dict: torch has no GRU with reset_after=False (the "
                         "reset gate applied before the recurrent product)")
    _cell_name(layer)
    return layer.state_dict()


def from_torch(source, batch_first=None, nonlinearity=None, dtype=None):
    """An lstm_np layer from a ``torch.nn.LSTM/GRU/RNN`` (read by duck typing: its ``mode`` and
    constructor attributes, and ``state_dict()``) or from such a ``state_dict`` alone (the
    architecture is inferred from the keys and shapes; ``batch_first`` and the RNN
    ``nonlinearity`` are not in a state dict: pass them, defaults ``False`` and ``"tanh"``)."""
    if hasattr(source, "state_dict") and callable(source.state_dict):
        state = {k: _arrays.to_numpy(v, k) for k, v in source.state_dict().items()}
        mode = getattr(source, "mode", None)
        cell = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}.get(mode)
        if cell is None:
            raise TypeError(f"from_torch: expected a torch.nn.LSTM, GRU or RNN, got "
                            f"{type(source).__name__} (mode {mode!r})")
        config = dict(input_size=source.input_size, hidden_size=source.hidden_size,
                      num_layers=source.num_layers, bias=source.bias,
                      batch_first=source.batch_first if batch_first is None else batch_first,
                      bidirectional=source.bidirectional)
        if cell == "lstm":
            config["proj_size"] = getattr(source, "proj_size", 0)
        if cell == "rnn":
            config["nonlinearity"] = "relu" if mode == "RNN_RELU" else "tanh"
    else:
        state = {k: _arrays.to_numpy(v, k) for k, v in dict(source).items()}
        cell, config = _infer_torch_config(state)
        config["batch_first"] = bool(batch_first)
        if cell == "rnn":
            config["nonlinearity"] = nonlinearity or "tanh"
    config["dtype"] = dtype or _float_dtype(*state.values())
    layer = _CELLS[cell](**config)
    layer.load_state_dict(state)
    return layer


def _infer_torch_config(state):
    if "weight_ih_l0" not in state or "weight_hh_l0" not in state:
        raise KeyError(f"from_torch: expected torch RNN keys (weight_ih_l0, weight_hh_l0, ...), "
                       f"got {sorted(state)[:6]}")
    layers = 1 + max(int(k.split("_l")[1].split("_")[0])
                     for k in state if k.startswith("weight_ih_l"))
    w_ih, w_hh = state["weight_ih_l0"], state["weight_hh_l0"]
    proj = "weight_hr_l0" in state
    hidden = state["weight_hr_l0"].shape[1] if proj else w_hh.shape[1]
    gates = w_ih.shape[0] // hidden
    cell = {4: "lstm", 3: "gru", 1: "rnn"}.get(gates)
    if cell is None or gates * hidden != w_ih.shape[0]:
        raise ValueError(f"from_torch: weight_ih_l0 has {w_ih.shape[0]} rows for hidden size "
                         f"{hidden}: not 1, 3 or 4 gates")
    config = dict(input_size=w_ih.shape[1], hidden_size=hidden, num_layers=layers,
                  bias="bias_ih_l0" in state, bidirectional="weight_ih_l0_reverse" in state)
    if proj:
        config["proj_size"] = state["weight_hr_l0"].shape[0]
    return cell, config


# --------------------------------------------------------------------------- Keras
def to_keras(layer):
    """Keras weights of ``layer``: a list with one dict per layer and direction (index
    ``l * D + d``) holding ``kernel (I_l, G*U)``, ``recurrent_kernel (U, G*U)`` and, with a bias,
    ``bias`` (LSTM and SimpleRNN ``(G*U,)``; GRU ``(2, 3U)`` for ``reset_after=True``, ``(3U,)``
    otherwise)."""
    cell = _cell_name(layer)
    if layer.proj_size:
        raise ValueError("to_keras: Keras LSTM has no projection (proj_size)")
    out = []
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            w = layer._weights(k, d)
            order = _KERAS_GRU if cell == "gru" else list(range(layer.gate_count))
            entry = {"kernel": _blocks(w["weight_ih"], order).T.copy(),
                     "recurrent_kernel": _blocks(w["weight_hh"], order).T.copy()}
            if layer.bias:
                if cell == "gru" and layer.reset_after:
                    entry["bias"] = np.stack([_blocks(w["bias_ih"], order),
                                              _blocks(w["bias_hh"], order)])
                else:   # one bias: both torch biases are added outside every nonlinearity
                    entry["bias"] = _blocks(w["bias_ih"] + w["bias_hh"], order)
            out.append(entry)
    return out


def from_keras(weights, cell, reset_after=True, activation="tanh", bidirectional=False,
               batch_first=True, dtype=None):
    """An lstm_np layer from Keras weights: one dict (``kernel``, ``recurrent_kernel``,
    optional ``bias``) or a list of them, one per layer and direction as :func:`to_keras`
    gives. ``cell``: ``"lstm"``, ``"gru"`` or ``"rnn"`` (SimpleRNN, ``activation`` tanh or relu);
    ``reset_after``: the Keras GRU flag. Keras is batch-first, hence the default."""
    entries = [weights] if isinstance(weights, dict) else list(weights)
    if cell not in _CELLS:
        raise ValueError(f"cell: expected 'lstm', 'gru' or 'rnn', got {cell!r}")
    D = 2 if bidirectional else 1
    if not entries or len(entries) % D:
        raise ValueError(f"weights: expected a multiple of {D} entries, got {len(entries)}")
    first = entries[0]
    U = np.shape(first["recurrent_kernel"])[0]
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    has_bias = "bias" in first
    config = dict(input_size=np.shape(first["kernel"])[0], hidden_size=U,
                  num_layers=len(entries) // D, bias=has_bias, bidirectional=bidirectional,
                  batch_first=batch_first,
                  dtype=dtype or _float_dtype(first["kernel"]))
    if cell == "gru":
        config["reset_after"] = reset_after
    if cell == "rnn":
        config["nonlinearity"] = activation
    layer = _CELLS[cell](**config)
    order = _KERAS_GRU if cell == "gru" else list(range(G))
    state = {}
    for idx, entry in enumerate(entries):
        k, d = divmod(idx, D)
        sfx = f"_l{k}" + ("_reverse" if d else "")
        state["weight_ih" + sfx] = _blocks(np.asarray(entry["kernel"]).T, order)
        state["weight_hh" + sfx] = _blocks(np.asarray(entry["recurrent_kernel"]).T, order)
        if has_bias:
            bias = np.asarray(entry["bias"])
            if cell == "gru" and reset_after:
                if bias.shape != (2, 3 * U):
                    raise ValueError(f"bias: a Keras GRU with reset_after=True has bias "
                                     f"(2, {3 * U}), got {bias.shape}")
                state["bias_ih" + sfx] = _blocks(bias[0], order)
                state["bias_hh" + sfx] = _blocks(bias[1], order)
            else:
                state["bias_ih" + sfx] = _blocks(bias, order)
                state["bias_hh" + sfx] = np.zeros(G * U, bias.dtype)
    layer.load_state_dict(state)
    return layer


# --------------------------------------------------------------------------- ONNX
def to_onnx(layer):
    """ONNX operator weights of ``layer``: a list with one dict per layer holding ``W (D, G*H,
    I_l)``, ``R (D, G*H, H)``, ``B (D, 2*G*H)`` (zeros without bias) and the attributes
    ``hidden_size``, ``direction``, plus ``linear_before_reset`` (GRU) or ``activations``
    (RNN)."""
    cell = _cell_name(layer)
    if layer.proj_size:
        raise ValueError("to_onnx: the ONNX LSTM operator has no projection (proj_size)")
    order = {"lstm": _ONNX_LSTM_TO, "gru": _ONNX_GRU, "rnn": [0]}[cell]
    H = layer.hidden_size
    out = []
    for k in range(layer.num_layers):
        W, R, B = [], [], []
        for d in range(layer.num_directions):
            w = layer._weights(k, d)
            W.append(_blocks(w["weight_ih"], order))
            R.append(_blocks(w["weight_hh"], order))
            B.append(np.concatenate([_blocks(b, order) for b in layer._biases(w)]))
        entry = {"W": np.stack(W), "R": np.stack(R), "B": np.stack(B), "hidden_size": H,
                 "direction": "bidirectional" if layer.bidirectional else "forward"}
        if cell == "gru":
            entry["linear_before_reset"] = int(layer.reset_after)
        if cell == "rnn":
            entry["activations"] = ["Relu" if layer.nonlinearity == "relu" else "Tanh"] * \
                layer.num_directions
        out.append(entry)
    return out


def from_onnx(weights, cell, linear_before_reset=None, activation=None, batch_first=False,
              dtype=None):
    """An lstm_np layer from ONNX operator weights: one dict with ``W``, ``R`` and optional
    ``B`` (and optionally the attributes :func:`to_onnx` writes), or a list of them, one per
    stacked layer. ``linear_before_reset`` (GRU; 1 = torch's form) and ``activation`` (RNN,
    ``"Tanh"`` or ``"Relu"``) override what the dicts say."""
    entries = [weights] if isinstance(weights, dict) else list(weights)
    if cell not in _CELLS:
        raise ValueError(f"cell: expected 'lstm', 'gru' or 'rnn', got {cell!r}")
    first = entries[0]
    W0 = np.asarray(first["W"])
    if W0.ndim != 3:
        raise ValueError(f"W: expected (D, G*H, I), got shape {W0.shape}")
    D = W0.shape[0]
    H = np.shape(first["R"])[2]
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    if W0.shape[1] != G * H:
        raise ValueError(f"W: expected {G * H} rows for {cell} with hidden size {H}, "
                         f"got {W0.shape[1]}")
    has_bias = any("B" in e and np.any(np.asarray(e["B"]) != 0) for e in entries)
    config = dict(input_size=W0.shape[2], hidden_size=H, num_layers=len(entries),
                  bias=has_bias, bidirectional=D == 2, batch_first=batch_first,
                  dtype=dtype or _float_dtype(W0))
    if cell == "gru":
        lbr = (first.get("linear_before_reset", 0) if linear_before_reset is None
               else linear_before_reset)
        config["reset_after"] = bool(lbr)
    if cell == "rnn":
        act = activation or (first.get("activations") or ["Tanh"])[0]
        if act not in ("Tanh", "Relu"):
            raise ValueError(f"activation: lstm_np's RNN has Tanh or Relu, got {act!r}")
        config["nonlinearity"] = act.lower()
    layer = _CELLS[cell](**config)
    order = {"lstm": _ONNX_LSTM_FROM, "gru": _ONNX_GRU, "rnn": [0]}[cell]
    state = {}
    for k, entry in enumerate(entries):
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            state["weight_ih" + sfx] = _blocks(np.asarray(entry["W"])[d], order)
            state["weight_hh" + sfx] = _blocks(np.asarray(entry["R"])[d], order)
            if has_bias:
                B = np.asarray(entry["B"])[d] if "B" in entry else np.zeros(2 * G * H)
                state["bias_ih" + sfx] = _blocks(B[:G * H], order)
                state["bias_hh" + sfx] = _blocks(B[G * H:], order)
    layer.load_state_dict(state)
    return layer


def _decoded(value):
    """An ONNX attribute value with its bytes (and the bytes in a list) decoded to str."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [x.decode() if isinstance(x, bytes) else x for x in value]
    return value


def load_onnx(path, batch_first=None):
    """Every LSTM, GRU and RNN node of an ``.onnx`` file as an lstm_np layer, in graph order.
    Needs the optional ``onnx`` package (``pip install "lstm_np[onnx]"``); the weights must be
    initializers. Refused: peepholes (``P``), a ``reverse``-only direction, activations other
    than the defaults (RNN: Tanh or Relu), ``clip``, ``input_forget``."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ImportError("load_onnx needs the onnx package: "
                          "pip install \"lstm_np[onnx]\"") from None
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type not in ("LSTM", "GRU", "RNN"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: _decoded(v) for k, v in attrs.items()}
        direction = attrs.get("direction", "forward")
        if direction not in ("forward", "bidirectional"):
            raise ValueError(f"node {node.name!r}: direction {direction!r} is not supported")
        for bad in ("clip", "input_forget"):
            if attrs.get(bad):
                raise ValueError(f"node {node.name!r}: attribute {bad} is not supported")
        inputs = list(node.input) + [""] * 8
        names = {"W": inputs[1], "R": inputs[2], "B": inputs[3]}
        if node.op_type == "LSTM" and inputs[7]:
            P = inits.get(inputs[7])
            if P is None or np.any(P != 0):
                raise ValueError(f"node {node.name!r}: peephole weights are not supported")
        entry = {}
        for key, name in names.items():
            if name:
                if name not in inits:
                    raise ValueError(f"node {node.name!r}: input {key} ({name!r}) is not an "
                                     f"initializer")
                entry[key] = inits[name]
        cell = node.op_type.lower()
        acts = [a.lower() for a in attrs.get("activations") or []]
        if cell != "rnn" and acts:
            expected = ["sigmoid", "tanh", "tanh"] if cell == "lstm" else ["sigmoid", "tanh"]
            if len(acts) % len(expected) or acts != expected * (len(acts) // len(expected)):
                raise ValueError(f"node {node.name!r}: activations {acts} are not supported")
        layout_batch_first = bool(attrs.get("layout", 0))
        layers.append(from_onnx(entry, cell,
                                linear_before_reset=attrs.get("linear_before_reset", 0),
                                activation=(acts or ["tanh"])[0].capitalize()
                                if cell == "rnn" else None,
                                batch_first=(layout_batch_first if batch_first is None
                                             else batch_first)))
    if not layers:
        raise ValueError(f"{path}: no LSTM, GRU or RNN node in the graph")
    return layers
