"""Errors of the corrections store (subclasses of :class:`ToothMCLCore.errors.ToothMCLError`)."""

from __future__ import annotations

from ..errors import ToothMCLError


class CorrectionStoreError(ToothMCLError):
    """The store folder is missing, is not a store, is busy, or was made by a newer ToothMCL."""

    exit_code = 7


class CorruptStoreError(CorrectionStoreError):
    """The store's index or a saved revision is damaged; ``toothmcl corrections check`` says more."""

    exit_code = 8

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        #: what SQLite or the file system said, without the advice
        self.detail = detail
