"""The layer API around the math: parameters, init, dropout, aliasing, shapes."""
import numpy as np
import pytest
import torch

import lstm_np
from lstm_np.kernels import gru as gru_kernels
from lstm_np.kernels import lstm as lstm_kernels
from lstm_np.kernels import rnn as rnn_kernels
from helpers import make_layer, max_relative_error, random_state, state_parts
from torch_reference import torch_module

pytestmark = pytest.mark.usefixtures("kernel_path")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_params_match_torch_keys_shapes_order(cell):
    layer = make_layer(cell, 5, 6, num_layers=2, bidirectional=True,
                       **({"proj_size": 3} if cell == "lstm" else {}))
    module = torch_module(layer)
    ref = module.state_dict()
    assert list(layer.params) == list(ref)
    for name, value in layer.params.items():
        assert value.shape == tuple(ref[name].shape), name
        assert value.flags.c_contiguous


def test_init_is_uniform_in_bound():
    layer = lstm_np.LSTM(8, 16, num_layers=2, seed=3)
    bound = 1 / np.sqrt(16)
    values = np.concatenate([v.ravel() for v in layer.params.values()])
    assert values.min() >= -bound and values.max() <= bound
    assert values.min() < -0.9 * bound and values.max() > 0.9 * bound
    assert abs(values.mean()) < 0.05 * bound
    again = lstm_np.LSTM(8, 16, num_layers=2, seed=3)
    assert all(np.array_equal(layer.params[k], again.params[k]) for k in layer.params)


def test_load_state_dict_accepts_torch_tensors_and_round_trips():
    module = torch.nn.GRU(3, 4, num_layers=2, dtype=torch.float64)
    layer = lstm_np.GRU(3, 4, num_layers=2, dtype=np.float64)
    layer.load_state_dict(module.state_dict())
    for name, value in module.state_dict().items():
        assert np.array_equal(layer.params[name], value.numpy())
    sd = layer.state_dict()
    sd["weight_ih_l0"][0, 0] += 1.0  # a copy: editing it leaves the layer alone
    assert layer.params["weight_ih_l0"][0, 0] != sd["weight_ih_l0"][0, 0]


@pytest.mark.parametrize("bad,error,match", [
    ({"weight_ih_l0": np.zeros((3, 3))}, ValueError, r"expected shape \(16, 3\)"),
    ({"weight_ih_l1": np.zeros((16, 3))}, KeyError, "unexpected keys"),
    ({"weight_ih_l0": np.full((16, 3), np.nan)}, ValueError, "finite"),
    ({"weight_ih_l0": np.zeros((16, 3), dtype=np.int64)}, TypeError, "floating"),
])
def test_load_state_dict_refuses_and_changes_nothing(bad, error, match):
    layer = lstm_np.LSTM(3, 4)
    before = layer.state_dict()
    mapping = {**before, **bad}
    with pytest.raises(error, match=match):
        layer.load_state_dict(mapping)
    assert all(np.array_equal(before[k], layer.params[k]) for k in before)


def test_load_state_dict_strict():
    layer = lstm_np.LSTM(3, 4)
    partial = {"weight_ih_l0": np.ones((16, 3))}
    with pytest.raises(KeyError, match="missing keys"):
        layer.load_state_dict(partial)
    missing, unexpected = layer.load_state_dict(partial, strict=False)
    assert "weight_hh_l0" in missing and unexpected == []
    assert np.all(layer.params["weight_ih_l0"] == 1)


def test_dropout_matches_torch_layer_by_layer():
    """Dropout between layers: with the mask kept in the tape, a stack of one-layer torch LSTMs
    with that mask applied in between gives the same outputs and gradients."""
    rng = np.random.default_rng(0)
    layer = lstm_np.LSTM(3, 4, num_layers=2, dropout=0.5, dtype=np.float64, seed=1)
    x = rng.standard_normal((6, 2, 3))
    y, (h_n, c_n), tape = layer.forward(x)
    mask = tape.dropout_masks[0]
    assert mask is not None and set(np.unique(mask)) <= {0.0, 2.0} and 0 < mask.mean() < 2
    dy = rng.standard_normal(y.shape)
    grads = layer.backward(tape, dy)

    xt = torch.from_numpy(x).requires_grad_(True)
    mods = []
    for k in range(2):
        m = torch.nn.LSTM(3 if k == 0 else 4, 4, dtype=torch.float64)
        m.load_state_dict({n.replace(f"_l{k}", "_l0"): torch.from_numpy(v)
                           for n, v in layer.params.items() if n.endswith(f"_l{k}")})
        mods.append(m)
    y0, _ = mods[0](xt)
    y1, _ = mods[1](y0 * torch.from_numpy(mask))
    (y1 * torch.from_numpy(dy)).sum().backward()
    assert max_relative_error(y, y1.detach().numpy()) <= 1e-12
    assert max_relative_error(grads.dx, xt.grad.numpy()) <= 1e-12
    assert max_relative_error(grads.dparams["weight_hh_l0"],
                              mods[0].weight_hh_l0.grad.numpy()) <= 1e-12
    # inference never drops
    y_inf, _ = layer(x)
    no_drop = lstm_np.LSTM(3, 4, num_layers=2, dtype=np.float64)
    no_drop.load_state_dict(layer.params)
    assert np.array_equal(y_inf, no_drop(x)[0])


def test_dropout_is_seeded():
    x = np.ones((4, 2, 3), np.float32)
    a = lstm_np.GRU(3, 4, num_layers=3, dropout=0.3, seed=5)
    b = lstm_np.GRU(3, 4, num_layers=3, dropout=0.3, seed=5)
    ya, _, ta = a.forward(x)
    yb, _, tb = b.forward(x)
    assert np.array_equal(ya, yb)
    assert all(np.array_equal(m1, m2) for m1, m2 in zip(ta.dropout_masks[:2], tb.dropout_masks[:2]))


def test_tape_never_aliases_caller_arrays():
    rng = np.random.default_rng(0)
    layer = make_layer("lstm", 3, 4)
    x = rng.standard_normal((5, 2, 3))
    state = random_state(layer, 2, rng)
    y, state_n, tape = layer.forward(x, state)
    dy = rng.standard_normal(y.shape)
    expected = layer.backward(tape, dy)
    x[...] = 0.0              # the caller reuses its buffers...
    state[0][...] = 0.0
    state[1][...] = 0.0
    y[...] = 0.0
    state_n[0][...] = 0.0
    again = layer.backward(tape, dy)   # ...and the tape is unaffected
    assert np.array_equal(expected.dx, again.dx)
    for k in expected.dparams:
        assert np.array_equal(expected.dparams[k], again.dparams[k])


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_backward_reads_dy_and_changes_nothing_of_the_callers(cell, with_lengths):
    """``backward`` reads the caller's ``dy`` in place (no copy unless sequences end early, where
    the steps past the end are zeroed in a copy): ``dy`` and ``dstate`` stay bitwise as they were,
    no gradient shares their memory, and a second call gives the same gradients."""
    rng = np.random.default_rng(4)
    layer = make_layer(cell, 3, 4, num_layers=2, dropout=0.5, batch_first=True)
    x = rng.standard_normal((3, 6, 3))
    lengths = [6, 2, 4] if with_lengths else None
    y, state_n, tape = layer.forward(x, lengths=lengths)
    dy = rng.standard_normal(y.shape)
    dstate = random_state(layer, 3, rng)
    dy_before = dy.copy()
    dstate_before = [s.copy() for s in state_parts(dstate)]
    first = layer.backward(tape, dy, dstate)
    assert np.array_equal(dy, dy_before)
    assert all(np.array_equal(a, b) for a, b in zip(state_parts(dstate), dstate_before))
    grads = [first.dx, first.dh, *state_parts(first.dstate), *first.dparams.values()]
    assert not any(np.shares_memory(g, dy) for g in grads if g is not None)
    again = layer.backward(tape, dy, dstate)
    assert np.array_equal(first.dx, again.dx)
    assert all(np.array_equal(first.dparams[k], again.dparams[k]) for k in first.dparams)


def _frozen(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_read_only_arrays_give_the_same_results_and_compile_nothing(cell, monkeypatch):
    """A read-only input, lengths or ``dy`` (a memory map, a frozen buffer) gives the same
    outputs and gradients as writeable ones, and no new version of any time-loop kernel is
    compiled for it: every array a time loop is handed is writeable (the read-only ones are
    copied into the one array type the kernels take)."""
    handed = []
    time_loop = lstm_np.Recurrent._time_loop

    def recording(self, batch, kernel, twin, args, *rest, **kw):
        handed.extend(a for a in args if isinstance(a, np.ndarray))
        return time_loop(self, batch, kernel, twin, args, *rest, **kw)

    monkeypatch.setattr(lstm_np.Recurrent, "_time_loop", recording)
    rng = np.random.default_rng(5)
    layer = make_layer(cell, 3, 4)
    x, dy = rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 2, 4))
    lengths = np.array([6, 4])
    module = {"lstm": lstm_kernels, "gru": gru_kernels, "rnn": rnn_kernels}[cell]
    kernels = [getattr(module, f"{cell}_forward"), getattr(module, f"{cell}_backward")]

    def run(x, lengths, dy):
        y, _ = layer(x, lengths=lengths)
        _, _, tape = layer.forward(x, lengths=lengths)
        return y, layer.backward(tape, dy), layer.backward(layer.forward(x)[2], dy)

    expected = run(x, lengths, dy)
    compiled = [len(getattr(k, "signatures", ())) for k in kernels]
    handed.clear()
    got = run(_frozen(x), _frozen(lengths), _frozen(dy))
    assert handed and all(a.flags.writeable and a.flags.aligned for a in handed)
    assert np.array_equal(got[0], expected[0])
    for g, e in zip(got[1:], expected[1:]):
        assert np.array_equal(g.dx, e.dx)
        assert all(np.array_equal(g.dparams[k], e.dparams[k]) for k in e.dparams)
    assert [len(getattr(k, "signatures", ())) for k in kernels] == compiled


@pytest.mark.parametrize("lengths", [None, [5, 2, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("cell,options", [("lstm", {}), ("gru", {}), ("gru", {"reset_after": False}),
                                          ("rnn", {})], ids=["lstm", "gru", "gru-before", "rnn"])
def test_inference_equals_training_forward(cell, options, lengths):
    rng = np.random.default_rng(2)
    layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, dtype=np.float32, **options)
    x = rng.standard_normal((5, 3, 3)).astype(np.float32)
    y1, s1 = layer(x, lengths=lengths)
    y2, s2, _ = layer.forward(x, lengths=lengths)
    # the LSTM's and GRU's inference keeps no record of the steps (one step's scratch for the
    # gates) but does the same arithmetic: bitwise equal
    assert y1.dtype == np.float32 and np.array_equal(y1, y2)
    for a, b in zip(state_parts(s1), state_parts(s2)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_no_state_is_a_zero_state(cell, unbatched):
    """``state=None`` writes its zeros straight into the state sequences (no zero arrays made
    first): bitwise the call with explicit zeros, in inference and training, forward and
    reverse directions of a stack, whatever the sequence buffers held before (a call with a
    random state runs first and leaves its values in the reused memory)."""
    rng = np.random.default_rng(5)
    layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, dtype=np.float32,
                       **({"proj_size": 2} if cell == "lstm" else {}))
    x = rng.standard_normal((6, 3) if unbatched else (6, 2, 3)).astype(np.float32)
    zeros = tuple(np.zeros_like(p) for p in state_parts(random_state(layer, 2, rng, unbatched)))
    zeros = zeros if len(zeros) > 1 else zeros[0]
    for run in (lambda s: layer(x, s), lambda s: layer.forward(x, s)[:2]):
        run(random_state(layer, 2, rng, unbatched))
        y0, s0 = run(None)
        run(random_state(layer, 2, rng, unbatched))
        y1, s1 = run(zeros)
        assert np.array_equal(y0, y1)
        for a, b in zip(state_parts(s0), state_parts(s1)):
            assert np.array_equal(a, b)


def test_shapes_and_gradients_container():
    layer = lstm_np.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2,
                         batch_first=True, dtype=np.float64)
    x = np.zeros((4, 7, 3))
    y, (h, c), tape = layer.forward(x)
    assert y.shape == (4, 7, 4) and h.shape == (4, 4, 2) and c.shape == (4, 4, 5)
    grads = layer.backward(tape, np.ones_like(y))
    assert grads.dx.shape == x.shape
    assert grads.dh.shape == (4, 7, 4, 2) and grads.dc.shape == (4, 7, 4, 5)
    assert tape.gates(1, 1).shape == (7, 4, 20)
    assert list(grads.dparams) == list(layer.params)


def test_unbatched_shapes():
    layer = lstm_np.GRU(3, 5, num_layers=2, bidirectional=True, dtype=np.float64)
    y, h = layer(np.zeros((6, 3)))
    assert y.shape == (6, 10) and h.shape == (4, 5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_inference_lengths_kept_between_calls_are_never_a_tapes(cell):
    """Inference keeps its last all-``T`` lengths array for the next call of the same ``(B,
    T)``; calls of other shapes, with lengths, and training (whose tape holds its own) give the
    results a fresh layer gives, whatever was done to a tape's lengths."""
    rng = np.random.default_rng(5)
    layer = make_layer(cell, 3, 4)
    fresh = make_layer(cell, 3, 4)
    shapes = [(6, 2), (6, 2), (4, 3), (6, 2), (6, 3), (4, 3)]
    xs = [rng.standard_normal((T, B, 3)) for T, B in shapes]
    for x in xs:
        _, _, tape = layer.forward(x)
        tape.lengths[:] = 1                        # the caller's tape is the caller's
        assert np.array_equal(layer(x)[0], fresh(x)[0])
        short = np.full(x.shape[1], x.shape[0] - 1)
        assert np.array_equal(layer(x, lengths=short)[0], fresh(x, lengths=short)[0])
        assert np.array_equal(layer(x)[0], fresh(x)[0])
        assert layer.forward(x)[2].lengths is not layer.forward(x)[2].lengths
