"""The library's own error types."""


class FileFormatError(ValueError):
    """A model or checkpoint file that cannot be loaded: truncated, corrupted, of an unknown
    version, or whose arrays do not match its header or the model. Nothing was changed."""
