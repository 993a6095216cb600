"""Human-readable results: one line per case, a readable diff on failure, a summary."""

from __future__ import annotations

import click

from envoyext.runners import EMULATED, LIVE, NATIVE
from envoyext.scenario import fault_line
from envoyext.testrun import FAILED, NOT_RUN, PASSED, CaseResult

# How many of the filter's last log lines a failing case shows per runner.
LOG_TAIL = 10

_MARKS = {PASSED: ("PASS", "green"), FAILED: ("FAIL", "red"), NOT_RUN: ("NOT RUN", "yellow")}


def _runners(r: CaseResult) -> str:
    if not r.ran and not r.not_run:
        return "no runner ran it: its 'only:' excludes the runners this run used"
    marks = [f"{name}{'' if not fails else '✗'}" for name, fails in r.failures.items()]
    return " ".join(marks + [f"{name}: not run" for name in r.not_run])


def print_case(r: CaseResult) -> None:
    text, color = _MARKS[r.status]
    click.echo(f"{click.style(text, fg=color, bold=r.status == FAILED)} {r.scenario} › {r.case}  [{_runners(r)}]")
    for runner, reason in r.not_run.items():
        click.secho(f"     {runner}: not run: {reason}", fg="yellow")
    if r.status == NOT_RUN:
        return
    if r.worker_differences:
        _print_worker_differences(r)
    if r.passed:
        _print_filter_errors(r)
        return
    for runner, fails in r.failures.items():
        _diff(fails, ("expected", "got"), prefix=f"{runner}: ")
    if r.disagreements:
        click.secho("     EMULATOR DISAGREES WITH LIVE ENVOY (an emulator bug):", fg="magenta", bold=True)
        _diff(r.disagreements, ("emulated", "live"))
    if r.oracle:
        click.secho("     differs from the native Envoy filter:", fg="yellow", bold=True)
        _diff(r.oracle, (NATIVE, "filter"))
    _print_logs(r)


def _print_filter_errors(r: CaseResult) -> None:
    """Script errors and VM failures: a passing case must not hide them."""
    for runner, errors in r.filter_errors().items():
        click.secho(f"     warning: the filter failed in {runner}:", fg="yellow", bold=True)
        for line in errors[-LOG_TAIL:]:
            click.secho(f"       {line}", fg="yellow")


def _print_worker_differences(r: CaseResult) -> None:
    """Live ran with several workers; the emulator models one. Name what depends on that."""
    parts = sorted({m.where for m in r.worker_differences})
    click.secho(f"     differs with {r.workers} workers (the emulator models one worker): {', '.join(parts)}",
                fg="yellow", bold=True)
    if EMULATED in r.failures and LIVE in r.failures:
        unmet = {runner: {m.where for m in fails} for runner, fails in r.failures.items()}
        for runner, other in ((LIVE, EMULATED), (EMULATED, LIVE)):
            if unmet[runner] - unmet[other]:
                click.secho(f"     expectations that hold in {other} but not in {runner}, so depend on the "
                            f"worker count: {', '.join(sorted(unmet[runner] - unmet[other]))}", fg="yellow")
    _diff(r.worker_differences, ("emulated", "live"))


def _print_logs(r: CaseResult) -> None:
    """The filter's own last log lines per runner, to read a failure by."""
    for runner, obs in r.observations.items():
        lines = [obs.log_text(l) for l in obs.logs][-LOG_TAIL:]  # as logged: ids help here
        lines += [fault_line(f) for f in obs.faults]
        if lines:
            click.echo(f"     {runner} filter log (last {LOG_TAIL}):")
            for line in lines:
                click.echo(f"       {line}")


def _diff(mismatches, labels: tuple[str, str], prefix: str = "") -> None:
    width = max(map(len, labels)) + 1
    for m in mismatches:
        click.echo(f"     {prefix}{m.where}")
        click.echo(click.style(f"       - {labels[0] + ':':<{width}} {m.expected!r}", fg="green"))
        click.echo(click.style(f"       + {labels[1] + ':':<{width}} {m.actual!r}", fg="red"))


def counts(results: list[CaseResult]) -> dict[str, int]:
    return {status: sum(r.status == status for r in results) for status in (PASSED, FAILED, NOT_RUN)}


def summary_line(results: list[CaseResult]) -> str:
    """`N passed, N failed` (CI tooling parses this), then extras."""
    n = counts(results)
    text = f"{n[PASSED]} passed, {n[FAILED]} failed"
    if n[NOT_RUN]:
        text += f", {n[NOT_RUN]} not run"
    if results and not any(r.ran for r in results) and any(r.not_run for r in results):
        text += " (nothing ran: the mesh could not judge any case, see each case's reason)"
    elif results and not any(r.ran for r in results):
        text += " (nothing ran: every case's 'only:' excludes the runners of this run)"
    return text


def print_summary(results: list[CaseResult]) -> None:
    n = counts(results)
    color = "green" if n[FAILED] == 0 and n[PASSED] else "red"
    click.secho(summary_line(results), fg=color, bold=True)
