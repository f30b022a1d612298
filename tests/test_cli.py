"""The ``lstm-np`` command end to end on tiny settings."""
import json
import subprocess
import sys

import numpy as np
import pytest

from lstm_np import cli, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _valid_png(path):
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    import matplotlib.image
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0                       # not a blank picture


def test_demo_tiny(tmp_path, capsys):
    report = tmp_path / "report"
    cli.main(["demo", "--epochs", "3", "--repeats", "2", "--hidden", "4", "--cells", "lstm,gru",
              "--report", str(report), "--quiet"])
    out = capsys.readouterr().out
    for model in ("stateless LSTM", "stateful LSTM", "stateless GRU", "stateful GRU",
                  "persistence", "linear AR(3)"):
        assert f"| {model} |" in out
    data = json.loads((report / "demo.json").read_text())
    assert data["repeats"] == 2 and data["settings"]["epochs"] == 3
    rows = {r["model"]: r for r in data["rows"]}
    assert len(rows["stateful LSTM"]["rmse_per_seed"]) == 2
    assert all(np.isfinite(r["rmse_mean"]) and r["rmse_mean"] > 0 for r in data["rows"])
    assert rows["stateful LSTM"]["rmse_mean"] == pytest.approx(
        np.mean(rows["stateful LSTM"]["rmse_per_seed"]))
    _valid_png(data["files"]["forecast_png"])
    _valid_png(data["files"]["loss_png"])


def test_demo_on_a_csv_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plots, "available", lambda: False)
    csv = tmp_path / "series.csv"
    t = np.arange(120)
    csv.write_text("t,value\n" + "\n".join(f"{i},{np.sin(0.3 * i):.6f}" for i in t) + "\n")
    cli.main(["demo", "--csv", str(csv), "--column", "value", "--epochs", "2", "--repeats", "1",
              "--hidden", "3", "--report", str(tmp_path / "r"), "--quiet"])
    out = capsys.readouterr().out
    assert "series.csv:value" in out and "matplotlib is not installed" in out
    assert not list((tmp_path / "r").glob("*.png"))
    with pytest.raises(SystemExit, match="no column 'nope'"):
        cli.main(["demo", "--csv", str(csv), "--column", "nope", "--quiet"])


def test_study_tiny(tmp_path, capsys):
    report = tmp_path / "study"
    cli.main(["study", "batch-size", "--epochs", "2", "--repeats", "2", "--hidden", "3",
              "--batch-sizes", "4,82", "--report", str(report), "--quiet"])
    out = capsys.readouterr().out
    assert "What the data support" in out
    data = json.loads((report / "study_batch_size.json").read_text())
    one_batch = [r for r in data["rows"] if r["batches_per_epoch"] == 1]
    assert one_batch and one_batch[0]["training_loss_max_gap"] < 1e-12   # same computation
    assert len(data["verdict"]) == 2
    _valid_png(data["files"]["png"])


def test_gradients_tiny(tmp_path, capsys):
    report = tmp_path / "g"
    cli.main(["gradients", "--steps", "30", "--hidden", "4", "--layers", "2", "--seq-len", "10",
              "--report", str(report)])
    out = capsys.readouterr().out
    assert "| LSTM |" in out and "| GRU |" in out and "| RNN |" in out
    data = json.loads((report / "gradients.json").read_text())
    norms = np.array(data["cells"]["lstm"]["dh_norms"])
    assert norms.shape == (2, 30) and norms[1, -1] == pytest.approx(1.0)
    _valid_png(data["files"]["png"])


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "lstm_np", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "demo" in result.stdout and "gradients" in result.stdout
