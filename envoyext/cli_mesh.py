"""`envoyext mesh ...`: the modelled Istio mesh's commands. Parse, call, print; no logic here."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from envoyext.cli_support import user_errors
from envoyext.errors import UserError

DEFAULT_WORKDIR = Path(".envoyext") / "mesh"
_files = click.option("-f", "--filename", "files", multiple=True, required=True,
                      type=click.Path(exists=True, path_type=Path),
                      help="Kubernetes/Istio YAML file or directory (repeatable; later ones replace earlier ones).")
_workdir = click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_WORKDIR,
                        show_default=True, help="Where a running mesh keeps its configs and state.")


@click.group()
def mesh() -> None:
    """A modelled Istio mesh: your resources translated to real Envoy sidecars and gateways."""


def _load(files: tuple[Path, ...]):
    from envoyext.runners.mesh import build, load_resources
    return build(load_resources(list(files)))


@mesh.command()
@click.argument("name")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@user_errors
def example(name, directory):
    """Copy an example mesh to start from (bookinfo: Istio's sample app, its routing and scenarios)."""
    from envoyext.mesh import examples
    out = examples.copy(name, directory or Path(name))
    click.echo(f"wrote {out}")


@mesh.command()
@_files
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Directory to write (one sub-directory per proxy).")
@click.option("--no-check", is_flag=True, help="Skip Envoy's own validation of each config.")
@user_errors
def render(files, out, no_check):
    """Write every proxy's Envoy config (bootstrap + xDS files), each checked by `envoy --mode validate`."""
    from envoyext.mesh.render import render as render_mesh
    m = _load(files)
    out.resolve().parent.mkdir(parents=True, exist_ok=True)  # the tree is staged beside `out`
    written = render_mesh(m, out, check=not no_check, on_proxy=lambda n: click.echo(f"  {n}", err=True))
    click.echo(f"{len(written)} proxies rendered to {out}" + ("" if no_check else ", each validated by Envoy"))


@mesh.command()
@_files
@_workdir
@click.option("--watch", "watch_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A filter project: rebuild it when its source changes and swap it into the running Envoys.")
@user_errors
def up(files, workdir, watch_dir):
    """Run the mesh: an Envoy per sidecar and gateway, a stand-in app per pod. Ctrl-C stops it all."""
    from envoyext.mesh import state, watch
    from envoyext.runners.mesh import build, ingress, load_resources, started
    base = load_resources(list(files))
    resources = base
    if watch_dir is not None:
        from envoyext import project as proj
        p = proj.load(watch_dir)
        resources = watch.with_filter(p, proj.build(p), base, workdir.resolve() / "modules")
    started_at = time.monotonic()
    try:
        with started(build(resources), workdir.resolve()) as rt:
            state.save(workdir, files=list(files), base=rt.mesh.plan.base)
            took = time.monotonic() - started_at
            click.echo(f"mesh up: {len(rt.mesh.proxies)} proxies ready in {took:.1f} s")
            gw = ingress(rt.mesh)
            if gw is not None:
                click.echo(f"gateway: {rt.gateway_url()}/")
            for proxy in rt.mesh.proxies:
                click.echo(f"  {proxy.name:<32} admin http://{proxy.workload.ip}:15000/")
            watcher = watch.FilterWatcher(watch_dir, rt, base, echo=click.echo) if watch_dir else None
            click.echo("Ctrl-C to stop" + (f"; watching {watch_dir}" if watcher else ""))
            while True:
                if watcher:
                    watcher.poll()
                time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("stopped")


@mesh.command()
@_files
@_workdir
@user_errors
def apply(files, workdir):
    """Change a running mesh's routing: re-translate and deliver, no Envoy restarts."""
    from envoyext.mesh import state
    version = state.apply(workdir, list(files))
    click.echo(f"applied: config version {version} delivered to every proxy")


@mesh.command()
@click.argument("workload")
@_files
@user_errors
def describe(workload, files):
    """A proxy's listeners, routes, clusters and endpoints as tables (like istioctl proxy-config)."""
    from rich.console import Console

    from envoyext.mesh import describe as describe_mod
    m = _load(files)
    # Piped or redirected, rich would fit the tables to 80 columns and cut cluster names short
    # (outbound|9080|v2|revi…); a reader of that output (grep, a file) wants them whole.
    console = None if sys.stdout.isatty() else Console(width=400)
    describe_mod.show(m, workload, console=console)


@mesh.command()
@_files
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SVG file to write (default: stdout).")
@user_errors
def graph(files, out):
    """A picture of workloads, proxies and routes with their weights (SVG)."""
    from envoyext.mesh import graph as graph_mod
    svg = graph_mod.svg(_load(files))
    if out is None:
        sys.stdout.write(svg)
    else:
        out.write_text(svg)
        click.echo(f"wrote {out}")


@mesh.command("test")
@click.option("-f", "--filename", "files", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Resources to run the scenario in (default: the scenario's mesh.resources).")
@click.option("--scenario", "scenario_file", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--filter", "filter_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A published filter (the EnvoyFilter or WasmPlugin `envoyext publish` wrote): run the "
                   "filter's own scenario through the workload it selects, the filter coming from this file.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@user_errors
def mesh_test(files, scenario_file, filter_file, as_json):
    """Run a mesh scenario against live Envoys and judge every case."""
    from envoyext import report, scenario, testrun
    from envoyext.runners import MESH
    from envoyext.runners.mesh import validate
    from envoyext.scenario import MeshSpec
    sc = scenario.load(scenario_file)
    if filter_file is not None:
        sc = testrun.in_published_mesh(sc, list(files), filter_file)
    elif files:
        sc.mesh = MeshSpec(resources=list(files), workloads=sc.mesh.workloads if sc.mesh else {})
    if sc.mesh is None:
        raise UserError("not a mesh scenario", file=scenario_file, field="mesh",
                        fix="add 'mesh: {resources: DIR}', or pass -f DIR")
    validate(sc)
    results = testrun.run_scenario(None, sc, runners=(MESH,), validated=True)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        for r in results:
            report.print_case(r)
        report.print_summary(results)
    sys.exit(testrun.exit_code(results))


@mesh.command()
@click.option("-f", "--filename", "files", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Kubernetes/Istio YAML file or directory: show the certificates this mesh's proxies get.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A running mesh's work directory: show the certificates its proxies hold now.")
@user_errors
def certs(files, workdir):
    """Each proxy's workload identity, issuer, validity and next rotation (a table)."""
    from envoyext.mesh import sds
    if bool(files) == (workdir is not None):
        raise UserError("give either -f DIR (a mesh's resources) or --workdir DIR (a running mesh)",
                        field="-f/--workdir", fix="pass exactly one of them")
    if workdir is not None:
        rows = sds.rows_from_workdir(workdir)
        if not rows:
            raise UserError("no delivered certificates (no <proxy>/sds/default.yaml)", file=workdir,
                            fix="pass the --workdir of a running 'envoyext mesh up', or -f DIR")
    else:
        rows = sds.rows_for_mesh(_load(files))
    click.echo(sds.table(rows))
