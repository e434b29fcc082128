"""One hierarchy of errors for everything a user can get wrong.

Every message says what was expected, what was found, and what to do. The CLI turns any
:class:`ToothMCLError` into a one-line message and a non-zero exit code; the Slicer module shows
it in an error dialog. Anything else escaping the core is a bug.
"""

from __future__ import annotations


class ToothMCLError(Exception):
    """Base class of every error ToothMCL raises on purpose."""

    #: exit code the CLI uses for this kind of error
    exit_code = 1


class InvalidInputError(ToothMCLError):
    """An input file or array is not something ToothMCL can segment (wrong kind, shape, values)."""

    exit_code = 2


class RegistrationError(InvalidInputError):
    """An intraoral scan does not register onto its CBCT (wrong patient, wrong jaw, not a scan)."""


class ResourceLimitError(ToothMCLError):
    """The input is too large for the memory this process may use."""

    exit_code = 3


class WeightsError(ToothMCLError):
    """Model weights are missing, corrupt, have the wrong checksum, or do not fit the architecture."""

    exit_code = 4


class ConfigError(ToothMCLError):
    """A configuration or model card has unknown keys or values out of range."""

    exit_code = 5


class OutputError(ToothMCLError):
    """An output path cannot be written (unknown extension, unwritable folder)."""

    exit_code = 6


class CancelledError(ToothMCLError):
    """The user cancelled a running job; nothing was written."""

    exit_code = 130
