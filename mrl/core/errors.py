"""Exceptions that carry a one-line message for the user."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it and the fix."""


class DataNotFoundError(FileNotFoundError):
    """A data set's files are absent; the message names the path and how to get them."""


class NonFiniteError(FloatingPointError):
    """A loss or a tensor to be saved is NaN or infinite; the message names the step."""


class DataError(ConfigError):
    """A data set's files are there but unusable (corrupt, truncated, inconsistent)."""
