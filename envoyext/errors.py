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


def read_text(path: str | Path, *, what: str = "file") -> str:
    """A user's text file, or a UserError naming it: missing, a directory, a FIFO or device (which
    would block or never end), unreadable, or not UTF-8 (with the line of the first bad byte)."""
    return decode_utf8(read_bytes(path, what=what), path)


def read_bytes(path: str | Path, *, what: str = "file") -> bytes:
    import stat
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise UserError(f"is a directory, expected a {what}", file=path, fix="give the path of a file")
        if not stat.S_ISREG(mode):
            raise UserError(f"not a regular file (a FIFO, socket or device), expected a {what}", file=path,
                            fix="give the path of a regular file")
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} not found", file=path, fix="check the path") from None
    except PermissionError:
        raise UserError(f"cannot read the {what}: permission denied", file=path,
                        fix="make it readable by this user") from None
    except OSError as e:
        raise UserError(f"cannot read the {what}: {e.strerror or e}", file=path, fix="check the path") from None


def decode_utf8(data: bytes, path: str | Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"not UTF-8 text (byte 0x{data[e.start]:02x})", file=path, line=line,
                        fix="save the file as UTF-8") from None


def from_os_error(e: OSError) -> UserError:
    """An OSError about a user's path (read-only dir, a file where a directory should be, ...)."""
    name = e.filename if e.filename is not None else None
    fixes = {13: "make it writable/readable by this user", 30: "use a writable location",
             17: "remove it or choose another path", 20: "a path component is a file, not a directory",
             21: "give the path of a file, not a directory", 28: "free disk space"}
    return UserError(e.strerror or str(e), file=name, fix=fixes.get(e.errno, "check the path"))
