"""The `envoyext` command: parse, call, print, exit. No logic lives here.

Exit codes: 0 success, 1 a test failed or none ran (or doctor found a missing part), 2 bad input
(a `UserError`: one line naming file, field and fix; never a traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from envoyext import __version__, runners
from envoyext.cli_support import _fail, key_values, user_errors
from envoyext.errors import UserError


class _OneLineUsage(click.Group):
    """click prints a usage error as a usage block, a hint and the error; envoyext's promise is one
    line naming the place and the fix, exit 2, for every bad input, the command line included."""

    def main(self, *args, **kwargs):
        try:
            kwargs.setdefault("prog_name", "envoyext")  # also as `python -m envoyext.cli`
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "envoyext"
            _fail(UserError(e.format_message(), field=where, fix=f"see '{where} --help'"))
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except click.ClickException as e:   # e.g. a missing file argument
            e.show()
            sys.exit(e.exit_code)


@click.group(cls=_OneLineUsage)
@click.version_option(__version__, prog_name="envoyext")
def main():
    """Author, build, test and ship Envoy Lua and proxy-wasm filters."""
    from envoyext import tempfiles
    tempfiles.remove_stale_dirs()  # work dirs of runs that were killed (SIGKILL runs no cleanup)
    _quiet_owned_events()


def _quiet_owned_events():
    """A Wasm trap in the emulator is an event of the case, reported in its verdict; Python's
    last-resort logging would also print it (with wasmtime's backtrace) on stderr."""
    import logging
    emulator = logging.getLogger("envoyext.wasm.emulator")
    emulator.addHandler(logging.NullHandler())
    emulator.propagate = False


@main.command()
@user_errors
def doctor():
    """Check Envoy, its Lua and V8 Wasm runtimes, the C compiler, LuaJIT and Docker."""
    from envoyext import doctor as doc
    ok = True
    for check in doc.run_checks():
        mark = click.style("ok  ", fg="green") if check.ok else click.style(
            "MISSING" if check.required else "absent", fg="red" if check.required else "yellow")
        click.echo(f"{mark} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            click.echo(f"      fix: {check.fix}")
        ok &= check.ok or not check.required
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("kind")
@click.argument("name")
@click.option("--lang", type=click.Choice(["lua", "c"]), default="lua", show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to create the project (default: ./NAME).")
@user_errors
def new(kind, name, lang, directory):
    """Scaffold a filter project from a template (KIND: blank, or a filter-library kind)."""
    from envoyext import scaffold
    target = scaffold.render(kind, name, lang, directory or Path(name))
    click.echo(f"created {target} ({kind}, {lang}); next: envoyext test {target}")


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Rebuild even when the artifact is up to date.")
@user_errors
def build(path, force):
    """Build the filter's artifact (.wasm from C, checked .lua)."""
    from envoyext import project as proj
    p = proj.load(path)
    artifact = proj.build(p, force=force)
    click.echo(f"built {artifact.path} ({artifact.path.stat().st_size} bytes)")


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--as", "form", type=click.Choice(["envoyfilter", "wasmplugin", "envoy-gateway", "envoy"]),
              default=None, help="What to emit (default: WasmPlugin for Wasm, EnvoyFilter for Lua): Istio's "
              "envoyfilter or wasmplugin, Envoy Gateway's EnvoyExtensionPolicy, or a plain envoy filter entry.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the resource to this file (default: standard output).")
@click.option("--namespace", default="default", show_default=True, help="The resource's namespace.")
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE",
              help="A workload label the resource selects (repeatable; none: every workload in the namespace).")
@click.option("--target-ref", "target_refs", multiple=True, metavar="KIND/NAME",
              help="Attach to a Gateway or Service instead of labels (repeatable; NAME alone: a Gateway). "
                   "Required for --as envoy-gateway.")
@click.option("--url", default=None, help="Where a cluster fetches the Wasm module (https://..., or oci://... for "
              "a WasmPlugin or Envoy Gateway). Default: this machine's file.")
@click.option("--context", type=click.Choice(["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]),
              default="SIDECAR_INBOUND", show_default=True, help="Which side of the proxies.")
@click.option("--port", "ports", multiple=True, type=click.IntRange(1, 65535),
              help="Only traffic on this port (repeatable; WasmPlugin match ports, EnvoyFilter listener port).")
@click.option("--phase", type=click.Choice(["AUTHN", "AUTHZ", "STATS"]), default=None,
              help="WasmPlugin phase (default: just before the router).")
@click.option("--priority", type=int, default=None,
              help="Order among resources (EnvoyFilter default 10: non-zero, as Istio's analyzer asks).")
@click.option("--image-pull-policy", type=click.Choice(["IfNotPresent", "Always"]), default=None,
              help="When the module is fetched again (WasmPlugin, Envoy Gateway).")
@click.option("--routes-from", "routes_from", type=click.Path(path_type=Path), default=None, metavar="SCENARIO",
              help="Per-route configs: each route of this scenario with a per_filter_config, by its name "
                   "(EnvoyFilter HTTP_ROUTE patches).")
@click.option("--scenario", "scenario_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Configure the filter as this scenario does (default: filter.yaml's config).")
@click.option("--push", metavar="REF", default=None,
              help="Push the module as an OCI image (REGISTRY/REPO:TAG); the WasmPlugin pins it by digest.")
@click.option("--image-format", type=click.Choice(["oci", "compat"]), default="oci", show_default=True,
              help="The image: Wasm artifact layers (oci) or a tar+gzip layer holding plugin.wasm (compat).")
@click.option("--oci-layout", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Also write the image as an OCI image layout directory (alone: without pushing).")
@click.option("--apply", "apply_", is_flag=True,
              help="Server-side apply it to the kubeconfig's cluster (fieldManager envoyext) instead of printing it.")
@click.option("--dry-run", is_flag=True, help="With --apply: print the diff the apply would make; change nothing.")
@click.option("--kubeconfig", type=click.Path(path_type=Path), default=None,
              help="With --apply (default: $KUBECONFIG, then ~/.kube/config).")
@click.option("--kube-context", default=None, help="With --apply: the kubeconfig context (default: its current one).")
@click.option("--force-conflicts", is_flag=True, help="With --apply: take over fields another field manager owns.")
@user_errors
def publish(path, form, output, namespace, selectors, target_refs, url, context, ports, phase, priority,
            image_pull_policy, routes_from, scenario_file, push, image_format, oci_layout,
            apply_, dry_run, kubeconfig, kube_context, force_conflicts):
    """Emit what a cluster applies for this filter (Istio EnvoyFilter or WasmPlugin, Envoy Gateway
    EnvoyExtensionPolicy, or a plain Envoy filter entry), checked as the cluster would first, before
    any image is pushed, file written or resource applied."""
    from envoyext import project as proj
    from envoyext.publish import emit, istio, kube, registry
    labels = key_values(selectors, "--selector", "app=reviews")
    applying = kube.options(apply_, dry_run, kubeconfig, kube_context, force_conflicts)  # None without --apply
    refs = tuple(istio.TargetRef.parse(r) for r in target_refs)
    if url and push:
        raise UserError("--url says where the module is served, --push puts it in a registry: give one",
                        field="--url", fix="drop --url (the pushed image's url is pinned by digest) or --push")
    p = proj.load(path)
    config = proj.scenario_config(p, scenario_file) if scenario_file is not None else p.config
    artifact = proj.build(p)
    where = istio.Placement(namespace=namespace, selector=labels, context=context, phase=phase, priority=priority,
                            target_refs=refs, ports=tuple(ports), image_pull_policy=image_pull_policy)
    routes = emit.routes_from(routes_from, artifact) if routes_from else ()
    image = registry.plan(artifact, form=form, fmt=image_format, push=push, layout=oci_layout)
    url = image.url if image is not None and image.url else url
    doc = emit.resource(artifact, config, where, form, url=url, routes=routes)
    text = emit.validated(doc)
    if image is not None and image.carry_out():
        click.echo(f"pushed {image.url}", err=True)
    if applying is not None:
        applying.publish(text, click.echo)
    if output is None and applying is None:
        click.echo(text, nl=False)
    elif output is not None:
        emit.write(text, output)
        click.echo(f"wrote {output}", err=True)
    for note in emit.notes(artifact, doc, url, where):
        click.echo(note, err=True)


class RunnerChoice(click.Choice):
    """A runner's registry name; the names older scripts pass (`unit`) are accepted, not shown."""

    def convert(self, value, param, ctx):
        return super().convert(runners.ALIASES.get(value, value), param, ctx)


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--only", type=RunnerChoice(runners.selectable()), default=None,
              help="emulated: the emulator only; live: real Envoy only; mesh: the project's mesh only "
                   "(filter.yaml mesh:). Default: all that apply, emulated and live compared.")
@click.option("--runtime", type=click.Choice(["process", "docker"]), default="process", show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Live Envoy's worker threads (overrides the scenario's and filter.yaml's 'workers'; default 1).")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@user_errors
def test(path, only, runtime, workers, as_json):
    """Build the filter and run its scenarios in the emulator and in live Envoy.

    Exit 0 when every case that ran passed (cases that no runner ran are reported NOT RUN, never
    as passed); 1 when a case failed or when no case ran at all; 2 on bad input."""
    from envoyext import project as proj
    from envoyext import report, testrun
    p = proj.load(path)
    if not p.scenario_files:
        raise UserError("no scenario files", file=p.file, field="scenarios",
                        fix="add scenarios/*.yaml or list them under 'scenarios'")
    artifact = proj.build(p)
    printer = None if as_json else report.print_case
    chosen = (only,) if only else runners.selectable()
    results = testrun.run_project(p, artifact, runners=chosen, runtime=runtime, workers=workers,
                                  on_result=printer)
    if as_json:
        click.echo(json.dumps({"filter": p.name, "summary": report.counts(results),
                               "results": [r.to_json() for r in results]}, indent=2))
    else:
        report.print_summary(results)
    sys.exit(testrun.exit_code(results))


@main.command()
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--scenario", "scenario_file", required=True, type=click.Path(path_type=Path))
@click.option("--project", "project_dir", type=click.Path(path_type=Path), default=None,
              help="The filter.yaml to take config, root_id, vm_id, failure_policy and lua options from "
                   "(default: the one next to ARTIFACT or above its build/ dir, if any).")
@click.option("--config", "config_text", default=None, help="Filter configuration (JSON) if the scenario has none.")
@click.option("--root-id", default=None, help="Wasm root_id (overrides filter.yaml's).")
@click.option("--vm-id", default=None, help="Wasm vm_id (overrides filter.yaml's).")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def emulate(artifact, scenario_file, project_dir, config_text, root_id, vm_id, as_json):
    """Run one scenario file in the emulator alone (ARTIFACT: a .wasm or .lua)."""
    from envoyext import project as proj
    from envoyext import report, testrun
    from envoyext import scenario as scenario_mod
    try:
        config = json.loads(config_text) if config_text else None
    except ValueError as e:
        raise UserError(f"--config is not JSON: {e}", fix="pass a JSON value") from None
    p = proj.load(project_dir) if project_dir else proj.beside(artifact)
    a = proj.artifact_for(artifact, p, root_id=root_id, vm_id=vm_id)
    sc = scenario_mod.load(scenario_file, default_config=config if config_text else a.config)
    if p is not None:
        p.check_config(sc.config, sc.path)
    results = testrun.run_scenario(a, sc, runners=(runners.EMULATED,))
    if as_json:
        click.echo(json.dumps({"summary": report.counts(results), "results": [r.to_json() for r in results]},
                              indent=2))
    else:
        for r in results:
            report.print_case(r)
        report.print_summary(results)
    sys.exit(testrun.exit_code(results))


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--scenario", "scenario_file", type=click.Path(path_type=Path), default=None,
              help="Take config, clusters and routes from this scenario.")
@user_errors
def config(path, scenario_file):
    """Print the Envoy bootstrap the filter is tested in (YAML; upstream ports are placeholders)."""
    import yaml

    from envoyext.envoy import bootstrap
    _, artifact, sc = _built_with_scenario(path, scenario_file)
    addresses = {name: ("127.0.0.1", 0) for name in sc.all_clusters()}
    click.echo(yaml.safe_dump(bootstrap.build(artifact, sc, addresses),
                              sort_keys=False), nl=False)


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--scenario", "scenario_file", type=click.Path(path_type=Path), default=None,
              help="The scenario whose config, clusters, native filter and request are used "
                   "(default: the first with an oracle, else the first).")
@click.option("--case", "case_name", default=None, help="The case whose request is sent (default: the first live one).")
@click.option("--runs", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Interleaved runs per subject; the figures are their medians.")
@click.option("--duration", type=click.IntRange(1, 600), default=2, show_default=True, help="Seconds per wrk run.")
@click.option("--route", "modes", type=click.Choice(["direct", "upstream", "both"]), default="both",
              show_default=True, help="direct: the route answers itself; upstream: a fast Envoy upstream.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@user_errors
def bench(path, scenario_file, case_name, runs, duration, modes, as_json):
    """Data-path cost of the filter: requests/s and p50/p99 latency through live Envoy (wrk) with
    the filter, with no filter and with the scenario's native filter, runs interleaved, Envoy at
    warning log level. Needs wrk (apt-get install wrk)."""
    from envoyext import benchmark
    from envoyext import project as proj
    from envoyext import scenario as scenario_mod
    p = proj.load(path)
    artifact = proj.build(p)
    if scenario_file is None:
        if not p.scenario_files:
            raise UserError("the project has no scenario", file=p.file, fix="add one, or pass --scenario")
        loaded = [scenario_mod.load(f, default_config=p.config) for f in p.scenario_files]
        sc = next((s for s in loaded if s.oracle is not None), loaded[0])
    else:
        sc = scenario_mod.load(scenario_file, default_config=p.config)
    p.check_config(sc.config, sc.path)
    case = benchmark.pick_case(sc, case_name)
    rows = []
    for mode in benchmark.MODES if modes == "both" else (modes,):
        m = benchmark.measure(benchmark.project_subjects(artifact, sc), sc, case.request, mode=mode, runs=runs,
                              duration=duration)
        rows += benchmark.summary_rows(m)
    if as_json:
        click.echo(json.dumps({"scenario": str(sc.path), "case": case.name, "runs": runs, "duration_s": duration,
                               "rows": rows}, indent=1))
        return
    click.echo(f"{p.name}: {sc.path.name}, case '{case.name}'; wrk -t{benchmark.WRK_THREADS} "
               f"-c{benchmark.WRK_CONNECTIONS} -d{duration}s, median of {runs} interleaved runs")
    click.echo(benchmark.format_rows(rows))


def _built_with_scenario(path, scenario_file):
    """The project, its built artifact, and the scenario to take clusters and routes from
    (a bare one, with the echo upstream, when none is named)."""
    from envoyext import project as proj
    from envoyext import scenario as scenario_mod
    p = proj.load(path)
    artifact = proj.build(p)
    if scenario_file:
        sc = scenario_mod.load(scenario_file, default_config=p.config)
    else:
        sc = scenario_mod.from_dict({"cases": [{"name": "-"}]}, p.file, default_config=p.config)
    p.check_config(sc.config, sc.path)
    return p, artifact, sc


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--scenario", "scenario_file", type=click.Path(path_type=Path), default=None,
              help="Take upstreams, clusters and routes from this scenario.")
@click.option("--watch", is_flag=True,
              help="Rebuild when the sources change and swap the filter into the running Envoy (no restart).")
@user_errors
def run(path, scenario_file, watch):
    """Start Envoy with the filter and an echo upstream; stay until Ctrl-C."""
    if watch:
        _run_watched(path, scenario_file)
        return
    import time

    from envoyext.runners import live
    p, artifact, sc = _built_with_scenario(path, scenario_file)
    try:  # Ctrl-C is how this command ends, whenever it comes once Envoy is up
        with live.started(artifact, sc) as (envoy, _):
            click.echo(f"filter {p.name} listening on {envoy.url}")
            click.echo(f"admin: {envoy.admin.url}   log: {envoy.log_path}")
            click.echo("Ctrl-C to stop")
            while envoy.proc.poll() is None:
                time.sleep(0.5)
            log = envoy.log_text().strip().splitlines()[-1:]
    except KeyboardInterrupt:
        click.echo("stopped")
        return
    raise UserError(f"Envoy exited unexpectedly: {log[0] if log else 'no log'}", fix="see Envoy's log")


def _run_watched(path, scenario_file):
    """`run --watch`: the listener through file-based LDS, swapped on every good rebuild."""
    import time

    from envoyext.envoy import watched
    try:  # Ctrl-C is how this command ends, whenever it comes once Envoy is up
        with watched.WatchedEnvoy(lambda: _built_with_scenario(path, scenario_file),
                                  echo=lambda line: click.echo(line, err=True)) as w:
            envoy = w.envoy
            click.echo(f"filter {w.project.name} listening on {envoy.url}")
            click.echo(f"admin: {envoy.admin.url}   log: {envoy.log_path}")
            click.echo(f"watching {len(watched.source_files(w.project, w.scenario))} files: each change is rebuilt "
                       "and swapped in without a restart")
            click.echo("Ctrl-C to stop")
            while envoy.proc.poll() is None:
                time.sleep(watched.POLL_S)
                w.poll()
            log = envoy.log_text().strip().splitlines()[-1:]
    except KeyboardInterrupt:
        click.echo("stopped")
        return
    raise UserError(f"Envoy exited unexpectedly: {log[0] if log else 'no log'}", fix="see Envoy's log")


def _register_subcommands() -> None:
    from envoyext.cli_jwt import jwt
    from envoyext.cli_mesh import mesh
    main.add_command(mesh)
    main.add_command(jwt)


_register_subcommands()

if __name__ == "__main__":
    main()
