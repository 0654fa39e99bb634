"""Typed errors. ``PermanentError`` means retrying cannot help (bad input, bad config); anything else may be transient."""


class WorldStereoError(Exception):
    """Base of every error this package raises on purpose."""


class PermanentError(WorldStereoError):
    """Retrying will not help: the scene fails with this message as its reason."""


class InvalidKeyError(PermanentError, ValueError):
    """An object-store key that is unsafe or malformed."""


class InvalidInputError(PermanentError, ValueError):
    """An input image, depth map or camera file that cannot be used."""


class ConfigurationError(PermanentError):
    """A backend or setting is missing or inconsistent."""


class StorageError(WorldStereoError):
    """The object store failed; usually transient."""
