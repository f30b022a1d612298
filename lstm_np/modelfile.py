"""A safe, versioned model file: ``lstm_np.save(model, path)`` and ``lstm_np.load(path)``.

The file is an ``.npz`` (no pickle anywhere) holding the parameters and a JSON header::

    {"format": "lstm_np.model", "version": 1,
     "model": {"type": "Sequential", "layers": [{"type": "LSTM", "config": {...}}, ...]},
     "arrays": {"0.weight_ih_l0": {"shape": [64, 8], "dtype": "float32"}, ...}}

Loading builds nothing until the header has been checked: the version, every layer type and
config value, and every array's name, shape and dtype against both the header and the model the
header describes; then the values must be finite. Any problem (truncated or corrupted file,
unknown version, missing or extra arrays, wrong shapes, NaN/Inf weights) raises
:class:`~lstm_np.errors.FileFormatError` naming it. Writing is atomic.
"""
import numpy as np

from . import _npzfile
from .errors import FileFormatError
from .model import LastStep, Linear, Sequential
from .recurrent import GRU, LSTM, RNN

FORMAT = "lstm_np.model"
VERSION = 1
_TYPES = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN, "Linear": Linear, "LastStep": LastStep}
_CONFIG_KEYS = {
    "LSTM": {"input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
             "bidirectional", "proj_size", "dtype"},
    "GRU": {"input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
            "bidirectional", "reset_after", "dtype"},
    "RNN": {"input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
            "bidirectional", "nonlinearity", "dtype"},
    "Linear": {"in_features", "out_features", "bias", "dtype"},
    "LastStep": {"batch_first"},
}
_MAX_SIZE = 1 << 28          # no config may ask for more than this many entries per array


def _describe(model):
    if isinstance(model, Sequential):
        return {"type": "Sequential", "layers": [_describe(layer) for layer in model.layers]}
    for name, cls in _TYPES.items():
        if type(model) is cls:
            return {"type": name, "config": model.config()}
    raise TypeError(f"save: cannot describe a {type(model).__name__} (expected LSTM, GRU, RNN, "
                    "Linear, LastStep or a Sequential of them)")


def save(model, path):
    """Write ``model`` (a recurrent layer, Linear, LastStep or Sequential) to ``path``."""
    header = {"format": FORMAT, "version": VERSION, "model": _describe(model),
              "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.name}
                         for k, v in model.params.items()}}
    _npzfile.write(path, header, dict(model.params))


def _build(spec, path):
    if not isinstance(spec, dict) or "type" not in spec:
        raise FileFormatError(f"{path}: a model description must be an object with a 'type'")
    kind = spec["type"]
    if kind == "Sequential":
        layers = spec.get("layers")
        if not isinstance(layers, list) or not layers or len(layers) > 1000:
            raise FileFormatError(f"{path}: a Sequential needs a list of 1 to 1000 layers")
        return Sequential([_build(layer, path) for layer in layers])
    if kind not in _TYPES:
        raise FileFormatError(f"{path}: unknown layer type {kind!r}")
    config = spec.get("config")
    if not isinstance(config, dict) or not set(config) <= _CONFIG_KEYS[kind]:
        raise FileFormatError(f"{path}: {kind} config must be an object with keys among "
                              f"{sorted(_CONFIG_KEYS[kind])}, got {config!r}"[:500])
    for key, value in config.items():
        if key == "dtype":
            if value not in ("float32", "float64"):
                raise FileFormatError(f"{path}: {kind} dtype {value!r} is not float32/float64")
        elif key in ("bias", "batch_first", "bidirectional", "reset_after"):
            if not isinstance(value, bool):
                raise FileFormatError(f"{path}: {kind} {key} must be true or false, got {value!r}")
        elif key == "nonlinearity":
            if value not in ("tanh", "relu"):
                raise FileFormatError(f"{path}: {kind} nonlinearity {value!r}")
        elif key == "dropout":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise FileFormatError(f"{path}: {kind} dropout {value!r} is not in [0, 1)")
        elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_SIZE:
            raise FileFormatError(f"{path}: {kind} {key} must be an int in [0, {_MAX_SIZE}], "
                                  f"got {value!r}")
    sizes = [config.get(k, 1) for k in ("input_size", "hidden_size", "in_features", "out_features")]
    weights = np.prod([max(s, 1) for s in sizes], dtype=np.float64) * config.get("num_layers", 1)
    if weights > _MAX_SIZE:
        raise FileFormatError(f"{path}: {kind} config asks for more than {_MAX_SIZE} weights")
    try:
        return _TYPES[kind](**config)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: {kind} config is invalid: {exc}") from None


def load(path):
    """The model saved at ``path``; see the module docstring for what is checked."""
    header, arrays = _npzfile.read(path)
    if header.get("format") != FORMAT:
        raise FileFormatError(f"{path}: not an lstm_np model file (format "
                              f"{str(header.get('format'))[:80]!r})")
    if header.get("version") != VERSION:
        raise FileFormatError(f"{path}: model file version {str(header.get('version'))[:40]} is "
                              f"not supported (this lstm_np reads version {VERSION})")
    declared = header.get("arrays")
    if not isinstance(declared, dict):
        raise FileFormatError(f"{path}: the header has no 'arrays' table")
    model = _build(header.get("model"), path)
    expected = model.params
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise FileFormatError(f"{path}: arrays do not match the model: missing {missing[:10]}, "
                              f"extra {extra[:10]}")
    if set(declared) != set(expected):
        raise FileFormatError(f"{path}: the header's array table does not match the model")
    for name, want in expected.items():
        spec = declared[name]
        if not isinstance(spec, dict) or spec.get("shape") != list(want.shape) \
                or spec.get("dtype") != want.dtype.name:
            raise FileFormatError(f"{path}: header entry for {name!r} is {str(spec)[:120]}, the "
                                  f"model needs {want.dtype.name} {list(want.shape)}")
        _npzfile.expect(arrays, name, want.shape, want.dtype, path)
    for name, want in expected.items():
        want[...] = arrays[name]
    return model
