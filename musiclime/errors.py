"""Input errors with a machine-readable code.

Every problem with a track's input that should end as a row in the pipeline's
``errors`` table is raised as :class:`InputError` (a ``ValueError``), whose ``code``
becomes the row's ``error_type``. Notebook users just see a ``ValueError`` with a
message that names the problem.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input for one track.

    Attributes:
        code: short snake_case identifier, e.g. ``"silent_audio"``; stable, used as
            ``error_type`` in the errors table.
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self):  # keep the code across Ray's pickling of exceptions
        return (type(self), (self.code, self.message))


class ModelOutputError(InputError):
    """The model returned something that is not a probability matrix."""

    def __init__(self, message: str):
        super().__init__("bad_model_output", message)

    def __reduce__(self):
        return (type(self), (self.message,))
