"""Human-readable results: one line per case, a readable diff on failure, a summary."""

from __future__ import annotations

import click

from envoyext.testrun import CaseResult


def _runners(r: CaseResult) -> str:
    return " ".join(f"{name}{'' if not fails else '✗'}" for name, fails in r.failures.items())


def print_case(r: CaseResult) -> None:
    mark = click.style("PASS", fg="green") if r.passed else click.style("FAIL", fg="red", bold=True)
    click.echo(f"{mark} {r.scenario} › {r.case}  [{_runners(r)}]")
    if r.passed:
        return
    for runner, fails in r.failures.items():
        for m in fails:
            click.echo(f"     {runner}: {m.where}")
            click.echo(click.style(f"       - expected: {m.expected!r}", fg="green"))
            click.echo(click.style(f"       + got:      {m.actual!r}", fg="red"))
    if r.disagreements:
        click.secho("     EMULATOR DISAGREES WITH LIVE ENVOY (an emulator bug):", fg="magenta", bold=True)
        for m in r.disagreements:
            click.echo(f"     {m.where}")
            click.echo(click.style(f"       - emulated: {m.expected!r}", fg="green"))
            click.echo(click.style(f"       + live:     {m.actual!r}", fg="red"))
    if r.oracle:
        click.secho("     differs from the native Envoy filter:", fg="yellow", bold=True)
        for m in r.oracle:
            click.echo(f"     {m.where}")
            click.echo(click.style(f"       - native: {m.expected!r}", fg="green"))
            click.echo(click.style(f"       + filter: {m.actual!r}", fg="red"))


def print_summary(results: list[CaseResult]) -> None:
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    color = "green" if failed == 0 else "red"
    click.secho(f"{passed} passed, {failed} failed", fg=color, bold=True)
