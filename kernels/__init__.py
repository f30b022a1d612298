"""Numba kernels of lstm_np (installed as ``lstm_np.kernels``).

Pure ``@njit`` functions over preallocated, time-major ``(T, B, .)``, C-contiguous arrays of one
dtype. They never validate, never allocate inside the time loop and know nothing of classes; the
layers in :mod:`lstm_np.recurrent` validate, allocate and call them.
"""
