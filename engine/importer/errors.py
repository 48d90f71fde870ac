"""The importer's errors: part of the one hierarchy (:class:`rusts.errors.RustsError`)."""

from __future__ import annotations

from rusts.errors import RustsError


class ImportInputError(RustsError):
    """The input cannot be imported as asked: a missing file or column, an unstorable column type,
    a file that is not of its format. The CLI prints the message and exits with status 1; the HTTP
    route answers 400."""

    http_status = 400


class TargetError(RustsError):
    """The target refused or could not be reached: an unreachable server, a rejected batch, a
    locked data directory. The CLI prints the message and exits with status 1."""
