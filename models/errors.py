"""Errors raised by model packs, converters and runtime wrappers."""


class ModelError(Exception):
    """A model could not be loaded or run (bad file, checksum, unknown wrapper, runtime error)."""


class ModelBuildError(Exception):
    """A model pack could not be built (a package, wheel or file could not be had)."""
