"""The one user-facing error type.

Anything the user can fix (a bad file, a missing tool, a config Envoy rejects) is raised as
`UserError`; the CLI prints it as one line and exits 2. Everything else is a bug and may trace.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem in the user's input, named by place (file, field or line) with a fix."""

    def __init__(self, message: str, *, file: str | Path | None = None,
                 field: str | None = None, line: int | None = None, fix: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        self.line = line
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        place = ""
        if self.file:
            place = self.file + (f":{self.line}" if self.line else "")
        if self.field:
            place = f"{place}: {self.field}" if place else self.field
        text = f"{place}: {self.message}" if place else self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return " ".join(text.split())  # one line, always


class BuildError(UserError):
    """The user's source does not compile or load."""


class EnvoyRejected(UserError):
    """Envoy refused the generated configuration; message is Envoy's own reason."""
