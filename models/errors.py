"""Errors raised by the model packages."""


class ModelError(Exception):
    """A model could not be loaded or run."""
