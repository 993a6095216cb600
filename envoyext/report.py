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
        _diff(fails, ("expected", "got"), prefix=f"{runner}: ")
    if r.disagreements:
        click.secho("     EMULATOR DISAGREES WITH LIVE ENVOY (an emulator bug):", fg="magenta", bold=True)
        _diff(r.disagreements, ("emulated", "live"))
    if r.oracle:
        click.secho("     differs from the native Envoy filter:", fg="yellow", bold=True)
        _diff(r.oracle, ("native", "filter"))


def _diff(mismatches, labels: tuple[str, str], prefix: str = "") -> None:
    width = max(map(len, labels)) + 1
    for m in mismatches:
        click.echo(f"     {prefix}{m.where}")
        click.echo(click.style(f"       - {labels[0] + ':':<{width}} {m.expected!r}", fg="green"))
        click.echo(click.style(f"       + {labels[1] + ':':<{width}} {m.actual!r}", fg="red"))


def print_summary(results: list[CaseResult]) -> None:
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    color = "green" if failed == 0 else "red"
    click.secho(f"{passed} passed, {failed} failed", fg=color, bold=True)
