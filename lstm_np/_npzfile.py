"""Safe ``.npz`` files: a JSON header plus named arrays, written atomically, read without pickle.

The header is stored as the UTF-8 bytes of a JSON document in the array ``__header__``. Every
failure to read becomes a :class:`~lstm_np.errors.FileFormatError` that names the problem.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from ._arrays import all_finite
from .errors import FileFormatError

HEADER_KEY = "__header__"


def write(path, header, arrays):
    """Write ``arrays`` (name -> ndarray) and ``header`` (JSON-able dict) to ``path`` atomically:
    a temporary file in the same folder, then ``os.replace``; a crash leaves the old file whole."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    payload = {HEADER_KEY: np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
    for name, value in arrays.items():
        if name == HEADER_KEY:
            raise ValueError(f"array name {HEADER_KEY!r} is reserved")
        payload[name] = np.ascontiguousarray(value)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path):
    """``(header, arrays)`` from a file written by :func:`write`; never unpickles anything."""
    try:
        source = path if hasattr(path, "read") else os.fspath(path)
        with np.load(source, allow_pickle=False) as data:
            names = list(data.files)
            if HEADER_KEY not in names:
                raise FileFormatError(f"{path}: no header (not a file written by lstm_np)")
            raw = data[HEADER_KEY]
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise FileFormatError(f"{path}: the header is not a byte string")
            header = json.loads(raw.tobytes().decode("utf-8"))
            if not isinstance(header, dict):
                raise FileFormatError(f"{path}: the header is not a JSON object")
            arrays = {name: data[name] for name in names if name != HEADER_KEY}
    except FileFormatError:
        raise
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError,
            json.JSONDecodeError, RuntimeError, NotImplementedError, TypeError,
            zipfile.LargeZipFile, IndexError, OverflowError, MemoryError) as exc:
        raise FileFormatError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    return header, arrays


def expect(arrays, name, shape, dtype, path):
    """The array ``name`` of the given shape and dtype, finite; else a FileFormatError."""
    if name not in arrays:
        raise FileFormatError(f"{path}: missing array {name!r}")
    arr = arrays[name]
    if tuple(arr.shape) != tuple(shape) or arr.dtype != np.dtype(dtype):
        raise FileFormatError(f"{path}: array {name!r} should be {np.dtype(dtype)} of shape "
                              f"{tuple(shape)}, is {arr.dtype} of shape {arr.shape}")
    if arr.dtype.kind == "f" and not all_finite(arr):
        raise FileFormatError(f"{path}: array {name!r} has NaN or Inf entries")
    return arr
