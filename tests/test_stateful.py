"""The stateful machinery: batch layout, the state store, chunked inference, checkpoints."""
import warnings

import numpy as np
import pytest

import lstm_np
from lstm_np.data import Standardizer, load_elnino, load_sunspots, stateful_batches, windows


@pytest.mark.parametrize("n,batch_size,seq_len", [(101, 4, 5), (100, 3, 7), (57, 1, 8),
                                                  (64, 7, 1), (33, 4, 8)])
def test_row_i_of_batch_k_plus_1_continues_row_i_of_batch_k(n, batch_size, seq_len):
    s = np.arange(n, dtype=np.float64) * 10 + 0.5      # every value unique
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = stateful_batches(s, batch_size, seq_len, dtype=np.float64)
    K = x.shape[0] // batch_size
    assert x.shape == (K * batch_size, seq_len, 1) and K >= 1
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])        # targets are the next step
    for k in range(K - 1):
        for i in range(batch_size):
            row, nxt = x[k * batch_size + i, :, 0], x[(k + 1) * batch_size + i, :, 0]
            assert nxt[0] == row[-1] + 10                       # starts exactly where it ended
            assert y[k * batch_size + i, -1, 0] == nxt[0]
    streams = x[:, :, 0].reshape(K, batch_size, seq_len).transpose(1, 0, 2).reshape(batch_size, -1)
    assert np.all(np.diff(streams, axis=1) == 10)              # each row is one contiguous stream
    assert len(np.unique(streams)) == streams.size             # no step used twice


def test_remainder_is_an_explicit_choice():
    s = np.arange(50.0)
    with pytest.warns(UserWarning, match=r"9 of 49 \(input, target\) steps"):
        stateful_batches(s, 4, 5)
    with pytest.raises(ValueError, match="9 of 49"):
        stateful_batches(s, 4, 5, remainder="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stateful_batches(np.arange(41.0), 4, 5)                 # fits exactly: no warning
    with pytest.raises(ValueError, match="too short"):
        stateful_batches(np.arange(5.0), 4, 5)


def test_several_series_one_per_stream():
    a, b = np.arange(21.0), np.arange(100.0, 131.0)
    with pytest.warns(UserWarning):
        x, y = stateful_batches([a, b], 2, 5)
    assert x.shape == (8, 5, 1)
    assert x[0, 0, 0] == 0 and x[1, 0, 0] == 100 and x[2, 0, 0] == 5 and x[3, 0, 0] == 105


def test_windows():
    x, y = windows(np.arange(10.0), window=3, horizon=2)
    assert x.shape == (6, 3, 1) and y.shape == (6, 2, 1)
    np.testing.assert_array_equal(x[2, :, 0], [2, 3, 4])
    np.testing.assert_array_equal(y[2, :, 0], [5, 6])


def test_bundled_series_and_standardizer():
    years, spots = load_sunspots()
    assert years[0] == 1700 and years[-1] == 2008 and spots.shape == (309,)
    assert spots[:3].tolist() == [5.0, 11.0, 16.0]
    months, sst = load_elnino()
    assert months.shape == sst.shape == (732,) and months[0] == "1950-01" and 15 < sst.mean() < 30
    scale = Standardizer.fit(spots[:200])
    z = scale.transform(spots[:200])
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1) < 1e-12
    np.testing.assert_allclose(scale.inverse(scale.transform(spots)).ravel(), spots)


def _model(stateful_batch=3, seed=0, dropout=0.0):
    rnn = lstm_np.LSTM(1, 4, num_layers=2, batch_first=True, dtype=np.float64, seed=seed,
                       dropout=dropout)
    return lstm_np.Sequential([rnn, lstm_np.Linear(4, 1, dtype=np.float64, seed=seed)])


def test_store_reset_slots_copies_and_wrong_batch():
    model = _model()
    store = lstm_np.StateStore(model, 3)
    rng = np.random.default_rng(0)
    _, states = model(rng.standard_normal((3, 5, 1)))
    store.write(states)
    read = store.read()
    states[0][0][...] = 7.0                         # the store kept a copy
    assert not np.any(store.read()[0][0] == 7.0)
    read[0][1][...] = 9.0                           # a read is a copy
    assert not np.any(store.read()[0][1] == 9.0)
    before = store.read()[0]
    store.reset([1])
    after = store.read()[0]
    for b, a in zip(before, after):
        assert np.all(a[:, 1] == 0) and np.array_equal(a[:, [0, 2]], b[:, [0, 2]])
    store.reset(np.array([True, False, True]))
    assert all(np.all(p == 0) for p in store.read()[0])
    with pytest.raises(ValueError, match=r"batch_size=3 .* got a batch of 5 rows.*StateStore\(model, batch_size=5\)"):
        store.check_batch(5)
    with pytest.raises(ValueError, match="state of recurrent layer 0 h: expected shape"):
        store.write([(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))])


def test_read_is_never_aliased_by_a_later_write():
    model = _model()
    store = lstm_np.StateStore(model, 2)
    x = np.random.default_rng(1).standard_normal((2, 4, 1))
    _, s1 = model(x)
    store.write(s1)
    snapshot = store.read()
    _, s2 = model(x, snapshot)
    store.write(s2)
    np.testing.assert_array_equal(snapshot[0][0], s1[0][0])


def test_chunked_stateful_inference_equals_one_long_sequence():
    model = _model()
    rng = np.random.default_rng(2)
    long = rng.standard_normal((2, 12, 1))
    whole, _ = model(long)
    trainer = lstm_np.Trainer(model, lstm_np.mse, lstm_np.SGD(model.params, lr=0.1),
                              stateful=True, batch_size=2, progress=False)
    # lay the two streams out as batches of 3 steps: rows [2k, 2k+1] = window k of streams 0, 1
    chunks = long.reshape(2, 4, 3, 1).transpose(1, 0, 2, 3).reshape(8, 3, 1)
    out = trainer.predict(chunks)
    rebuilt = out.reshape(4, 2, 3, 1).transpose(1, 0, 2, 3).reshape(2, 12, 1)
    np.testing.assert_allclose(rebuilt, whole, rtol=1e-13, atol=1e-14)
    # a warm-up seeds the state: predicting the second half after the first equals the tail
    tail = trainer.predict(chunks[4:], warmup=chunks[:4])
    np.testing.assert_allclose(tail, out[4:], rtol=1e-13, atol=1e-14)
    # batch size 1 for inference is a new store for the same model, not a new model
    single = trainer.predict(long[:1].reshape(1, 4, 3, 1).transpose(1, 0, 2, 3).reshape(4, 3, 1),
                             batch_size=1)
    np.testing.assert_allclose(single.reshape(12, 1), whole[0], rtol=1e-13, atol=1e-14)


def _trainer(stateful, seed=0, dropout=0.3):
    model = _model(seed=seed, dropout=dropout)
    return lstm_np.Trainer(model, lstm_np.mse, lstm_np.Adam(model.params, lr=0.01),
                           stateful=stateful, batch_size=3, seed=seed, progress=False)


@pytest.mark.parametrize("stateful", [True, False])
def test_resume_from_checkpoint_is_bitwise_identical(tmp_path, stateful):
    t = np.arange(200)
    x, y = stateful_batches(np.sin(0.2 * t), 3, 6, dtype=np.float64)
    n_batches = x.shape[0] // 3
    straight = _trainer(stateful)
    straight.fit(x, y, epochs=3)

    first = _trainer(stateful)
    first.fit(x, y, epochs=3, max_batches=n_batches + 4)      # stop mid-way through epoch 2
    path = tmp_path / "ckpt.npz"
    first.save(path)
    resumed = _trainer(stateful, seed=99)                      # different seed: load must win
    resumed.load(path)
    resumed.fit(x, y, epochs=3)
    for name, value in straight.model.params.items():
        assert np.array_equal(value, resumed.model.params[name]), name
    assert straight.history.batch_losses == resumed.history.batch_losses
    assert straight.history.epoch_losses == resumed.history.epoch_losses


def test_corrupted_or_truncated_checkpoint_changes_nothing(tmp_path):
    t = np.arange(120)
    x, y = stateful_batches(np.sin(0.2 * t), 3, 6, dtype=np.float64)
    trainer = _trainer(True)
    trainer.fit(x, y, epochs=1)
    path = tmp_path / "ckpt.npz"
    trainer.save(path)
    raw = path.read_bytes()
    victim = _trainer(True, seed=5)
    before = victim.model.state_dict()
    bad_files = {"truncated": raw[: len(raw) // 2], "empty": b"",
                 "flipped": raw[:200] + bytes([raw[200] ^ 0xFF]) + raw[201:],
                 "garbage": b"not a zip file at all"}
    for name, content in bad_files.items():
        bad = tmp_path / f"{name}.npz"
        bad.write_bytes(content)
        with pytest.raises(lstm_np.FileFormatError):
            victim.load(bad)
        assert all(np.array_equal(before[k], victim.model.params[k]) for k in before), name
        assert victim.epoch == 0 and victim.optimizer.steps == 0
    other = _trainer(False)
    with pytest.raises(lstm_np.FileFormatError, match="stateful"):
        other.load(path)
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_trainer_errors():
    model = _model()
    opt = lstm_np.SGD(model.params, lr=0.1)
    with pytest.raises(ValueError, match="stateful training never shuffles"):
        lstm_np.Trainer(model, lstm_np.mse, opt, stateful=True, shuffle=True)
    trainer = lstm_np.Trainer(model, lstm_np.mse, opt, stateful=True, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="multiple of batch_size=4.*got N=6"):
        trainer.fit(np.zeros((6, 3, 1)), np.zeros((6, 3, 1)))
    with pytest.raises(ValueError, match=r"expected \(N, T, F\)"):
        trainer.fit(np.zeros((8, 3)), np.zeros((8, 3)))
    time_major = lstm_np.Sequential([lstm_np.LSTM(1, 2), lstm_np.Linear(2, 1)])
    with pytest.raises(ValueError, match="batch_first=True"):
        lstm_np.Trainer(time_major, lstm_np.mse, lstm_np.SGD(time_major.params, lr=0.1))


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_nonfinite_loss_guard(mode):
    """A learning rate of 1e200 blows the head's weights up after one step, so the second
    batch's loss overflows: "raise" stops naming epoch and batch with the parameters of before
    that batch; "skip" drops the bad updates and keeps training."""
    def make():
        model = _model()
        return lstm_np.Trainer(model, lstm_np.mse, lstm_np.SGD(model.params, lr=1e200),
                               batch_size=2, shuffle=False, progress=False, on_nonfinite=mode)
    x = np.random.default_rng(0).standard_normal((6, 3, 1))
    y = x + 1.0
    trainer = make()
    if mode == "raise":
        with pytest.raises(lstm_np.NonFiniteError, match="epoch 1, batch 2"), \
                np.errstate(all="ignore"):
            trainer.fit(x, y)
        reference = make()
        with np.errstate(all="ignore"):
            reference.fit(x[:2], y[:2])          # exactly the first batch's update
        for k, v in reference.model.params.items():
            assert np.array_equal(trainer.model.params[k], v), k
    else:
        with np.errstate(all="ignore"):
            history = trainer.fit(x, y)
        assert history.skipped == [(0, 1), (0, 2)]
        assert history.batch_losses[0][1] is None and history.batch_losses[0][0] is not None
        assert all(np.isfinite(v).all() for v in trainer.model.params.values())
