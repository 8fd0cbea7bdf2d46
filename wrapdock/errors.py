"""The errors a user can see, each with its documented exit code.

Every error reaches the user as one line (`wrapdock: error: ...`) and an exit code; no traceback.
The codes are listed in README ("Exit codes").
"""

from __future__ import annotations


class WrapdockError(Exception):
    """Base class: a message for the user and the exit code to leave with."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # always one line, whatever the input held


class UsageError(WrapdockError):
    """Bad input: malformed values, unknown or duplicate objects, conflicts. Nothing was changed."""

    exit_code = 2


class OperationFailed(WrapdockError):
    """A host command failed; what the operation had done so far was rolled back."""

    exit_code = 1


class StateError(WrapdockError):
    """A state file is unreadable or does not match its schema; it was left as it is."""

    exit_code = 3


class EnvironmentProblem(WrapdockError):
    """The host cannot do this: not root, a missing tool."""

    exit_code = 4
