"""What every command shares: bad input as one line and exit code 2, Ctrl-C as exit code 130."""

from __future__ import annotations

import functools
import sys

import click

from envoyext.errors import UserError, from_os_error


def user_errors(fn):
    """Turn UserError into one line on stderr and exit code 2; Ctrl-C into exit 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            _fail(e)
        except OSError as e:
            if e.filename is None:  # not about a path the user gave: a bug, let it trace
                raise
            _fail(from_os_error(e))  # a read-only project, a file where a directory should be, ...
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
    return wrapper


def _fail(e: UserError):
    click.secho(f"error: {e.one_line()}", fg="red", err=True)
    sys.exit(2)


def key_values(items: tuple[str, ...], option: str, example: str) -> dict[str, str]:
    """Repeated `KEY=VALUE` options as a dict; one line naming the option for anything else."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{item!r} is not KEY=VALUE", field=option, fix=f"write e.g. {option} {example}")
        out[key] = value
    return out
