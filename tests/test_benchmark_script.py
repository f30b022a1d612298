"""benchmarks/run.py runs and writes consistent tables (a smoke test on tiny shapes: it checks
what the tables say against each other, never how fast anything is)."""
import importlib.util
import math
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("lstm_np_benchmark_run", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text, header):
    """The cells of every row of the table under ``header``."""
    block = text.split(header, 1)[1].split("\n### ", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]
            if not row.startswith("| ---")]


def _close(ratio, a, b, digits):
    """``ratio`` as printed (``digits`` decimals) against ``a / b`` from 3-significant-digit
    figures: within their rounding."""
    return abs(float(ratio) - a / b) <= 0.5 * 10 ** -digits + 0.011 * a / b


@pytest.fixture(scope="module")
def tables(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tables.md"
    assert bench.main(["--sections", "train,infer,flops,memory,accuracy", "--threads", "1",
                       "--cells", "lstm,rnn", "--dtypes", "float32,float64",
                       "--shapes", "1x4x8,64x2x4", "--repeats", "1", "--out", str(out)]) == 0
    return out.read_text()


def test_every_timing_row_is_there_with_its_ratio(tables):
    for header in ("### Training step", "### Inference"):
        rows = _rows(tables, header)
        assert {(r[0], r[1], r[2]) for r in rows} == {
            (c, d, s) for c in ("LSTM", "RNN") for d in ("float32", "float64")
            for s in ("1, 4, 8", "64, 2, 4")}
        for cell, dtype, shape, threads, ours, theirs, ratio in rows:
            assert threads == "1" and float(ours) > 0 and float(theirs) > 0
            assert _close(ratio, float(ours), float(theirs), 2), (cell, dtype, shape)


def test_flops_rows_only_for_the_large_shapes_and_against_the_measured_matmul(tables, bench):
    rows = _rows(tables, "### Achieved GFLOP/s")
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (c, d, "64, 2, 4") for c in ("LSTM", "RNN") for d in ("float32", "float64")}
    train = {(r[0], r[1], r[2]): float(r[4]) for r in _rows(tables, "### Training step")}
    for cell, dtype, shape, _, ours, theirs, peak, share in rows:
        flops = bench.flops_training(cell.lower(), 64, 2, 4)
        # both printed rounded: GFLOP/s to 0.1 (0.05 either way), the training time to three
        # figures (0.5 % either way, so its GFLOP/s to 0.6 %); isclose takes the larger of its
        # two tolerances, not their sum, and once failed at 2.8 against 2.858
        expected = flops / train[cell, dtype, shape] * 1e3 / 1e9
        assert abs(float(ours) - expected) <= 0.05 + 0.006 * expected, (cell, dtype)
        assert abs(float(share.rstrip("%")) / 100 - float(ours) / float(peak)) <= 0.01


def test_memory_rows_compare_the_tape_with_torchs_saved_tensors(tables):
    rows = _rows(tables, "### Memory kept")
    assert {(r[0], r[1]) for r in rows} == {(c, s) for c in ("LSTM", "RNN")
                                            for s in ("1, 4, 8", "64, 2, 4")}
    for cell, shape, ours, theirs, ratio in rows:
        ours, theirs = float(ours), float(theirs)            # MB to two decimals
        assert float(ratio) > 0 and theirs > 0
        low = max(ours - 0.005, 0) / (theirs + 0.005)
        high = (ours + 0.005) / max(theirs - 0.005, 1e-9)
        assert low - 0.005 <= float(ratio) <= high + 0.005, (cell, shape)


def test_accuracy_rows_give_every_parameter_a_small_finite_error(tables):
    rows = _rows(tables, "### float32 gradient accuracy")
    assert [(r[0], r[2]) for r in rows] == [
        (c, p) for c in ("LSTM", "RNN")
        for p in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    for cell, shape, name, ours, theirs in rows:
        assert shape == "64, 2, 4"
        for err in (float(ours), float(theirs)):           # float32 against float64
            assert math.isfinite(err) and 0 <= err < 1e-3, (cell, name, err)


def test_an_unknown_section_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--sections", "train,speedup"])
