"""Checkpoints of a :class:`~lstm_np.trainer.Trainer`: one ``.npz`` (no pickle) holding the model
parameters, the optimizer moments, the state store, every RNG (the trainer's shuffling and each
layer's dropout) and the position (epoch, batch, this epoch's order). Resuming from a checkpoint
taken mid-epoch continues bit for bit as if never interrupted (tested).

Writing is atomic (temporary file + rename). Loading checks every array against the header and
the trainer before changing anything; a bad file raises
:class:`~lstm_np.errors.FileFormatError`.
"""
import numpy as np

from . import _npzfile
from .errors import FileFormatError
from .state import recurrent_layers

FORMAT = "lstm_np.checkpoint"
VERSION = 1


def save(trainer, path):
    opt = trainer.optimizer
    opt_state = opt.state_dict()
    arrays = {f"model/{k}": v for k, v in trainer.model.params.items()}
    for slot, values in opt_state["state"].items():
        for name, v in values.items():
            arrays[f"optim/{slot}/{name}"] = v
    if trainer.store is not None:
        arrays.update({f"store/{k}": v for k, v in trainer.store.arrays().items()})
    if trainer.order is not None:
        arrays["order"] = np.asarray(trainer.order, dtype=np.int64)
    header = {
        "format": FORMAT, "version": VERSION,
        "epoch": trainer.epoch, "batch": trainer.batch,
        "stateful": trainer.stateful, "batch_size": trainer.batch_size,
        "optimizer": type(opt).__name__, "optimizer_steps": opt_state["steps"],
        "rng": trainer.rng.bit_generator.state,
        "layer_rngs": [layer.rng.bit_generator.state for layer in recurrent_layers(trainer.model)],
        "history": {"batch_losses": trainer.history.batch_losses,
                    "epoch_losses": trainer.history.epoch_losses,
                    "skipped": trainer.history.skipped},
    }
    _npzfile.write(path, header, arrays)


def load(trainer, path):
    header, arrays = _npzfile.read(path)
    if header.get("format") != FORMAT:
        raise FileFormatError(f"{path}: not a checkpoint (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise FileFormatError(f"{path}: checkpoint version {header.get('version')!r} is not "
                              f"supported (this lstm_np reads version {VERSION})")
    try:
        epoch, batch = int(header["epoch"]), int(header["batch"])
        if header["stateful"] != trainer.stateful or header["batch_size"] != trainer.batch_size:
            raise FileFormatError(f"{path}: written by a trainer with stateful="
                                  f"{header['stateful']}, batch_size={header['batch_size']}; this "
                                  f"one has stateful={trainer.stateful}, "
                                  f"batch_size={trainer.batch_size}")
        if header["optimizer"] != type(trainer.optimizer).__name__:
            raise FileFormatError(f"{path}: optimizer {header['optimizer']} in the file, "
                                  f"{type(trainer.optimizer).__name__} in the trainer")
        params = {k: _npzfile.expect(arrays, f"model/{k}", v.shape, v.dtype, path)
                  for k, v in trainer.model.params.items()}
        opt_state = {"steps": int(header["optimizer_steps"]), "state": {}}
        for slot in trainer.optimizer.slots:
            prefix = f"optim/{slot}/"
            opt_state["state"][slot] = {
                name[len(prefix):]: _npzfile.expect(
                    arrays, name, trainer.model.params[name[len(prefix):]].shape,
                    trainer.model.params[name[len(prefix):]].dtype, path)
                for name in arrays if name.startswith(prefix)
                and name[len(prefix):] in trainer.model.params}
        store_arrays = None
        if trainer.store is not None:
            store_arrays = {name[len("store/"):]: arrays[name] for name in arrays
                            if name.startswith("store/")}
            for name, v in trainer.store.arrays().items():
                _npzfile.expect(arrays, f"store/{name}", v.shape, v.dtype, path)
        order = arrays.get("order")
        if order is not None and (order.dtype != np.int64 or order.ndim != 1):
            raise FileFormatError(f"{path}: array 'order' should be 1-D int64")
        known = {f"model/{k}" for k in params} | {"order"} | \
            {f"store/{k}" for k in (store_arrays or {})} | \
            {f"optim/{s}/{k}" for s, vals in opt_state["state"].items() for k in vals}
        extra = sorted(set(arrays) - known)
        if extra:
            raise FileFormatError(f"{path}: unexpected arrays {extra}")
        layers = recurrent_layers(trainer.model)
        if len(header["layer_rngs"]) != len(layers):
            raise FileFormatError(f"{path}: {len(header['layer_rngs'])} layer RNG states for "
                                  f"{len(layers)} recurrent layers")
        rng = np.random.default_rng()
        rng.bit_generator.state = header["rng"]          # validates the RNG state
        layer_rngs = []
        for state in header["layer_rngs"]:
            g = np.random.default_rng()
            g.bit_generator.state = state
            layer_rngs.append(g)
        history = header["history"]
    except FileFormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: malformed checkpoint header "
                              f"({type(exc).__name__}: {exc})") from None

    # everything checked: now change the trainer
    for k, v in params.items():
        trainer.model.params[k][...] = v
    trainer.optimizer.load_state_dict(opt_state)
    if trainer.store is not None:
        trainer.store.load_arrays(store_arrays)
    trainer.order = None if order is None else order.copy()
    trainer.epoch, trainer.batch = epoch, batch
    trainer.rng = rng
    for layer, g in zip(layers, layer_rngs):
        layer.rng = g
    trainer.history.batch_losses = [list(b) for b in history["batch_losses"]]
    trainer.history.epoch_losses = list(history["epoch_losses"])
    trainer.history.skipped = [tuple(s) for s in history["skipped"]]
