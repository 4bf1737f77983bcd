"""Domain errors: a stable machine-readable code and a human message; web/ maps each kind to one HTTP status."""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the domain raises on purpose. ``code`` is stable; ``message`` is for people."""

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details  # extra fields of the JSON reply


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
    """The data disk cannot take the upload, the job or the change."""


class KeyReused(ApplianceError):
    """An Idempotency-Key came again with a different request."""


class ConfigError(ApplianceError):
    """A setting is unknown or has a value of the wrong kind."""

    def __init__(self, message: str) -> None:
        super().__init__("config_error", message)


class AlreadyRunning(ApplianceError):
    """Another appliance process holds the lock on this home folder."""

    def __init__(self, message: str) -> None:
        super().__init__("already_running", message)


class InvalidOptions(ApplianceError):
    """A job's options break the app's schema. ``problems`` maps each offending option to the reason."""

    def __init__(self, problems: dict[str, str]) -> None:
        listed = "; ".join(f"{name}: {reason}" for name, reason in problems.items())
        super().__init__("invalid_options", f"invalid job_inputs: {listed}", options=problems)
        self.problems = problems


class Unavailable(ApplianceError):
    """The app cannot run on this machine (its finder is not installed, or no container runtime is set up)."""


class NotReady(ApplianceError):
    """The job has not ended yet, so its outputs do not exist yet (caesar-rest answers 202)."""


class FilesRefused(ApplianceError):
    """Jobs on several files were refused because some of the files cannot be used: ``files`` lists each refused
    file (uuid, filename_orig) with its error code and message."""

    def __init__(self, files: list[dict[str, object]]) -> None:
        listed = "; ".join(f"{f['filename_orig']}: {f['status']}" for f in files)
        super().__init__("files_refused", f"no job was submitted: {len(files)} file(s) refused: {listed}", files=files)
        self.files = files
