"""Errors raised by the model packages."""


class ModelBuildError(Exception):
    """A model file could not be obtained or converted."""


class ModelError(Exception):
    """A model could not be loaded or run."""
