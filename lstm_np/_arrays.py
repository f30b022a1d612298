"""Conversion and validation of arrays that come from users (numpy, lists, torch tensors).

Every check raises before anything is changed, with a message that names what was expected and
what came.
"""
import numpy as np

from .kernels._blocks import all_finite as _all_finite_1d, all_finite_numpy

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_FLOAT32, _FLOAT64 = FLOAT_DTYPES


def _is_float_dtype(dt):
    """Whether ``dt`` is NumPy's float32 or float64 dtype object itself (native byte order):
    NumPy keeps one object for each, so identity answers without NumPy's dtype comparison,
    which every call's input checks run, caches cold after another library's call."""
    return dt is _FLOAT32 or dt is _FLOAT64


def to_numpy(value, what):
    """``value`` as a numpy array without importing torch: accepts anything with ``__array__``
    or a ``.numpy()`` method (a torch tensor, detached first if it needs it)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and callable(value.detach):
        value = value.detach()
    if hasattr(value, "cpu") and callable(value.cpu):
        value = value.cpu()
    if hasattr(value, "numpy") and callable(value.numpy):
        return np.asarray(value.numpy())
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists, objects numpy cannot read
        raise TypeError(f"{what}: expected an array, got {type(value).__name__} ({exc})") from None


def as_dtype(dtype):
    """``float32`` or ``float64`` as a numpy dtype; anything else is a TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def float_array(value, what, dtype, ndim=None, shape=None, finite=True):
    """Validate ``value`` as a floating array of exactly ``dtype`` and return it (no copy).

    ``ndim`` may be an int or a tuple of allowed ranks; ``shape`` a tuple with ``None`` for
    "any size". Ints, bools, complex and object arrays are refused, and so is a float array of the
    other precision: mixing precisions silently is how float64 references get float32 answers.
    """
    arr = value if type(value) is np.ndarray else to_numpy(value, what)
    dt = arr.dtype
    if not (dt is dtype and _is_float_dtype(dt)):          # else the full checks
        if dt.kind != "f" or dt not in FLOAT_DTYPES:
            raise TypeError(f"{what}: expected a {np.dtype(dtype)} array, got dtype {dt}")
        if dt != dtype:
            raise TypeError(
                f"{what}: expected dtype {np.dtype(dtype)} (the layer's dtype), got {dt}; "
                f"convert with .astype(np.{np.dtype(dtype)}) or build the layer with "
                f"dtype=np.{dt}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            ranks = " or ".join(str(r) for r in allowed)
            raise ValueError(f"{what}: expected rank {ranks}, got shape {arr.shape} "
                             f"(rank {arr.ndim})")
    if shape is not None:
        ok = len(shape) == arr.ndim and all(s is None or s == n for s, n in zip(shape, arr.shape))
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{what}: expected shape {want}, got {arr.shape}")
    if finite and not all_finite(arr):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{what}: expected finite values, got {bad} NaN/Inf entries")
    return arr


def kernel_operand(arr):
    """``arr`` as the one kind of array the kernels are compiled for: C-contiguous, writeable and
    aligned (NumPy's ``carray`` flag); a copy only where it is not. A read-only or unaligned
    array (a memory map, a frozen buffer) is another type to Numba, and the first call with one
    would compile every kernel it reaches once more (seconds), and keep that version in the
    cache too."""
    if arr.flags.carray:
        return arr
    return np.array(arr, order="C")


def all_finite(arr):
    """True when no entry of the array ``arr`` is NaN or +-Inf. A contiguous, writeable float32
    or float64 array is checked by one compiled vectorised pass (3-4x faster than
    ``np.isfinite(arr).all()`` at the sizes of a call's input, see
    :func:`lstm_np.kernels._blocks.all_finite`); anything else by NumPy. (The three flags as
    NumPy's one ``carray``: every call's input comes through here.)"""
    if _is_float_dtype(arr.dtype) and arr.flags.carray:
        return _all_finite_1d(arr.reshape(-1))
    return all_finite_numpy(arr)


def positive_int(value, what, minimum=1):
    """An ``int`` (not bool) at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what}: expected an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{what}: expected an int >= {minimum}, got {value}")
    return int(value)


def lengths_array(lengths, batch, steps):
    """Per-sequence lengths as int64 ``(B,)`` with ``1 <= lengths[b] <= T``; ``None`` means all
    T."""
    if lengths is None:
        arr = np.empty(batch, np.int64)      # (np.full costs several Python calls more)
        arr.fill(steps)
        return arr
    arr = to_numpy(lengths, "lengths")
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise TypeError(f"lengths: expected a 1-D array of ints (one per sequence), "
                        f"got dtype {arr.dtype} and shape {arr.shape}")
    if arr.shape[0] != batch:
        raise ValueError(f"lengths: expected {batch} entries (one per sequence), "
                         f"got {arr.shape[0]}")
    if arr.size and (arr.min() < 1 or arr.max() > steps):
        raise ValueError(f"lengths: expected values in [1, {steps}] (T = {steps}), "
                         f"got min {arr.min()} and max {arr.max()}")
    return kernel_operand(arr.astype(np.int64, copy=False))


def slot_index(slots, size):
    """Rows to act on: a boolean mask of length ``size`` or integer indices in ``[0, size)``,
    returned as an int64 index array."""
    arr = to_numpy(slots, "slots")
    if arr.dtype == bool:
        if arr.shape != (size,):
            raise ValueError(f"slots: expected a boolean mask of shape ({size},), got {arr.shape}")
        return np.flatnonzero(arr)
    if arr.dtype.kind not in "iu" or arr.ndim > 1:
        raise TypeError(f"slots: expected row indices (ints) or a boolean mask, got dtype "
                        f"{arr.dtype} and shape {arr.shape}")
    arr = arr.reshape(-1).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= size):
        raise ValueError(f"slots: expected indices in [0, {size - 1}], got min {arr.min()} "
                         f"and max {arr.max()}")
    return arr
