"""Pictures for the ``lstm-np`` command, drawn with matplotlib when it is installed
(``pip install "lstm_np[plot]"``). Every function writes one PNG and returns its path; without
matplotlib, :func:`available` is False and the command prints its tables only."""
import os


def available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def forecast_figure(path, time_axis, actual, forecasts, title):
    """Test part: the actual series and each model's one-step forecast."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(time_axis, actual, color="black", linewidth=2, label="actual")
    for name, values in forecasts.items():
        ax.plot(time_axis, values, linewidth=1.2, label=name)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def loss_figure(path, curves, title):
    """Training loss per epoch, one line per model (first seed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training MSE (standardised)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def study_figure(path, batch_sizes, means, stds):
    """Stateful minus stateless test RMSE against batch size, with +-1 std over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(batch_sizes, means, yerr=stds, marker="o", capsize=4)
    ax.axhline(0.0, color="gray", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (streams)")
    ax.set_ylabel("stateful - stateless test RMSE (std units)")
    ax.set_title("Does stateless training approach stateful as the batch grows?")
    return _save(fig, path)


def gradient_figure(path, flows, boundary=None):
    """Left: |dL/dh_t| against t for each cell (log scale); right: a heatmap over layers x steps
    of the first cell. ``boundary``: the step where a stateful batch boundary truncates BPTT."""
    import numpy as np
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for name, norms in flows.items():
        left.plot(np.arange(norms.shape[1]), norms[-1], label=f"{name} (top layer)")
    if boundary is not None:
        left.axvline(boundary, color="red", linestyle="--", label="stateful batch boundary")
        left.axvspan(0, boundary, color="red", alpha=0.06,
                     label="cut off by truncated BPTT (gradient 0)")
    left.set_yscale("log")
    left.set_xlabel("step t")
    left.set_ylabel("|dL/dh_t| for a loss at the last step")
    left.legend(fontsize=8)
    first = next(iter(flows))
    image = right.imshow(np.log10(flows[first] + 1e-300), aspect="auto", interpolation="nearest")
    right.set_xlabel("step t")
    right.set_ylabel("layer")
    right.set_yticks(range(flows[first].shape[0]))
    right.set_title(f"log10 |dL/dh_t|, {first}")
    fig.colorbar(image, ax=right)
    return _save(fig, path)


def ensure_folder(folder):
    os.makedirs(folder, exist_ok=True)
    return folder
