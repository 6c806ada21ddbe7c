"""The package's own error types: one line naming the file, the record and the fix."""

from __future__ import annotations


class VcfBertError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(VcfBertError, ValueError):
    """Bad user input (a VCF, panel file, checkpoint...).

    The message is one line: ``FILE: RECORD: PROBLEM; FIX``.
    """

    def __init__(self, path: str | None, problem: str, fix: str = "", record: str | None = None):
        self.path = str(path) if path is not None else None
        self.record = record
        self.problem = problem
        self.fix = fix
        parts = [p for p in (self.path, record, problem) if p]
        msg = ": ".join(parts)
        if fix:
            msg += f"; {fix}"
        super().__init__(msg.replace("\n", " "))


class CheckpointError(InputError):
    """A checkpoint that does not match the model, panel layout or vocab."""


def shown_names(names: list[str], most: int = 5) -> str:
    """The first ``most`` names and how many more: a long list kept to one line of an error."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
