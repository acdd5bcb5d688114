"""The one error type of the export package."""

__all__ = ["ExportError"]


class ExportError(RuntimeError, ValueError):
    """An export request that cannot be carried out, or an artifact that failed verification.

    A ``ValueError`` as well, so the ``detector`` commands report it in one line
    (:func:`detector.errors.friendly_errors`); a ``RuntimeError`` as it always was.
    """
