"""Domain errors: a stable machine-readable code and a human message; web/ maps each kind to one HTTP status."""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the domain raises on purpose. ``code`` is stable; ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidRequest(ApplianceError):
    """The request is malformed: a missing part, a bad parameter."""


class NotFound(ApplianceError):
    """The named file or job does not exist for this user."""


class Conflict(ApplianceError):
    """The request clashes with the current state, e.g. deleting a file a live job uses."""


class TooLarge(ApplianceError):
    """The upload exceeds the configured limit."""


class UnsupportedType(ApplianceError):
    """The upload is not a FITS file (by name or by content)."""


class InvalidContent(ApplianceError):
    """The upload is FITS but unusable: truncated, corrupt, or without a 2-D image."""


class InsufficientStorage(ApplianceError):
    """The data disk cannot take the upload."""


class ConfigError(ApplianceError):
    """A setting is unknown or has a value of the wrong kind."""

    def __init__(self, message: str) -> None:
        super().__init__("config_error", message)


class AlreadyRunning(ApplianceError):
    """Another appliance process holds the lock on this home folder."""

    def __init__(self, message: str) -> None:
        super().__init__("already_running", message)
