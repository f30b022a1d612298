"""The model file: round trips, every documented refusal, and a fuzz of mutated files."""
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstm_np
from lstm_np import _npzfile


def _model():
    return lstm_np.Sequential([
        lstm_np.LSTM(2, 4, num_layers=2, bidirectional=True, proj_size=3, batch_first=True,
                     dtype=np.float32, seed=0),
        lstm_np.GRU(6, 3, reset_after=False, batch_first=True, dtype=np.float32, seed=1),
        lstm_np.RNN(3, 2, nonlinearity="relu", batch_first=True, dtype=np.float32, seed=2),
        lstm_np.LastStep(batch_first=True),
        lstm_np.Linear(2, 1, dtype=np.float32, seed=3)])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.npz"
    model = _model()
    lstm_np.save(model, path)
    return model, path, path.read_bytes()


def test_round_trip(saved):
    model, path, _ = saved
    loaded = lstm_np.load(path)
    assert repr(loaded) == repr(model)
    assert all(np.array_equal(loaded.params[k], v) for k, v in model.params.items())
    x = np.random.default_rng(0).standard_normal((3, 5, 2)).astype(np.float32)
    assert np.array_equal(loaded(x)[0], model(x)[0])
    single = lstm_np.GRU(2, 3, dtype=np.float64, seed=4)
    lstm_np.save(single, path.with_name("single.npz"))
    again = lstm_np.load(path.with_name("single.npz"))
    assert isinstance(again, lstm_np.GRU) and again.config() == single.config()


def _rewrite(raw, edit_header=None, edit_arrays=None):
    header, arrays = _npzfile.read(io.BytesIO(raw))
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(arrays)
    buf = io.BytesIO()
    payload = {_npzfile.HEADER_KEY: np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays}
    np.savez(buf, **payload)
    return buf.getvalue()


def _set(path, value):
    def edit(h):
        node = h
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


BAD = [
    ("unknown version", dict(edit_header=_set(["version"], 2)), "version 2 is not supported"),
    ("not a model", dict(edit_header=_set(["format"], "lstm_np.checkpoint")), "not an lstm_np model"),
    ("missing array", dict(edit_arrays=lambda a: a.pop("4.bias")), r"missing \['4.bias'\]"),
    ("extra array", dict(edit_arrays=lambda a: a.update(evil=np.zeros(2))), r"extra \['evil'\]"),
    ("wrong shape", dict(edit_arrays=lambda a: a.update({"4.weight": np.zeros((1, 3), np.float32)})),
     "'4.weight' should be float32 of shape"),
    ("wrong dtype", dict(edit_arrays=lambda a: a.update({"4.weight": np.zeros((1, 2))})),
     "'4.weight' should be float32"),
    ("NaN weight", dict(edit_arrays=lambda a: a.update({"4.bias": np.array([np.nan], np.float32)})),
     "NaN or Inf"),
    ("header disagrees", dict(edit_header=_set(["arrays", "4.bias", "shape"], [2])),
     "header entry for '4.bias'"),
    ("absurd size", dict(edit_header=_set(["model", "layers", 4, "config", "in_features"], 10 ** 12)),
     "must be an int in"),
    ("negative size", dict(edit_header=_set(["model", "layers", 4, "config", "out_features"], -1)),
     "must be an int in"),
    ("unknown layer", dict(edit_header=_set(["model", "layers", 3, "type"], "os.system")),
     "unknown layer type 'os.system'"),
    ("bad flag", dict(edit_header=_set(["model", "layers", 0, "config", "bias"], "yes")),
     "bias must be true or false"),
    ("extra config", dict(edit_header=_set(["model", "layers", 0, "config", "__class__"], 1)),
     "config must be an object"),
    ("bad dtype", dict(edit_header=_set(["model", "layers", 4, "config", "dtype"], "object")),
     "dtype 'object'"),
]


@pytest.mark.parametrize("what,edit,match", BAD, ids=[b[0] for b in BAD])
def test_refusals_name_the_problem(saved, tmp_path, what, edit, match):
    _, _, raw = saved
    bad = tmp_path / "bad.npz"
    bad.write_bytes(_rewrite(raw, **edit))
    with pytest.raises(lstm_np.FileFormatError, match=match):
        lstm_np.load(bad)


def test_pickled_object_array_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(b'{"format": "lstm_np.model"}', np.uint8),
             evil=np.array([Evil()], dtype=object))
    path = tmp_path / "evil.npz"
    path.write_bytes(buf.getvalue())
    with pytest.raises(lstm_np.FileFormatError):
        lstm_np.load(path)
    assert not marker.exists()


def test_truncated_and_garbage(saved, tmp_path):
    _, _, raw = saved
    for n in (0, 10, len(raw) // 3, len(raw) - 1):
        p = tmp_path / f"t{n}.npz"
        p.write_bytes(raw[:n])
        with pytest.raises(lstm_np.FileFormatError):
            lstm_np.load(p)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    lstm_np.save(lstm_np.Linear(2, 1, seed=0), path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        lstm_np.save(lstm_np.Linear(2, 1, seed=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def _mutate(raw, data):
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete", "header"]))
    if kind == "truncate":
        return raw[:data.draw(st.integers(0, len(raw) - 1))]
    if kind == "header":                        # a valid zip whose JSON header is mangled
        header, arrays = _npzfile.read(io.BytesIO(raw))
        text = json.dumps(header)
        i = data.draw(st.integers(0, len(text) - 1))
        text = text[:i] + data.draw(st.sampled_from(["-1", "1e400", "null", "[]", "{}", "\"x\"",
                                                      "9" * 30, ",", "true"])) + text[i + 1:]
        buf = io.BytesIO()
        np.savez(buf, __header__=np.frombuffer(text.encode(), np.uint8), **arrays)
        return buf.getvalue()
    pos = data.draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        return raw[:pos] + bytes([raw[pos] ^ data.draw(st.integers(1, 255))]) + raw[pos + 1:]
    if kind == "insert":
        return raw[:pos] + data.draw(st.binary(min_size=1, max_size=16)) + raw[pos:]
    return raw[:pos] + raw[pos + data.draw(st.integers(1, 64)):]


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_only_the_library_error_escapes(saved, tmp_path, data):
    _, _, raw = saved
    path = tmp_path / "fuzz.npz"
    path.write_bytes(_mutate(raw, data))
    try:
        model = lstm_np.load(path)
    except lstm_np.FileFormatError:
        return
    # a mutation that changed nothing that matters (zip slack, JSON spacing) loads a valid model
    assert all(np.isfinite(v).all() for v in model.params.values())
