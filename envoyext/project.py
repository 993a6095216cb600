"""Filter projects: `filter.yaml` loaded, validated, given defaults, and built into an Artifact."""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoyext import schemas
from envoyext.artifact import Artifact, Attach, FailurePolicy, check_lua_libraries
from envoyext.errors import UserError

FILE = "filter.yaml"


@dataclass
class Project:
    root: Path
    name: str
    lang: str
    sources: list[Path] = field(default_factory=list)
    module: Path | None = None
    root_id: str = ""
    vm_id: str = ""
    failure_policy: FailurePolicy | None = None  # None: filter.yaml leaves it to the Artifact's default
    config: Any = None
    attach: Attach = field(default_factory=Attach)
    scenario_files: list[Path] = field(default_factory=list)
    stats_tags: list[dict] = field(default_factory=list)
    config_schema: Path | None = None
    lua_options: dict | None = None
    lua_libraries: tuple[str, ...] = ()  # envoyext/sdk/<name>.lua, appended to every script (artifact.lua_code)
    workers: int = 1  # live Envoy's worker threads; one is what the emulator models
    # filter.yaml's `mesh:` block, its resource paths resolved: the scenarios also run in this mesh.
    mesh: dict[str, Any] | None = None

    def check_config(self, config: Any, file: Path, field_name: str = "config") -> None:
        """Validate a filter configuration (filter.yaml's or a scenario's) against config_schema."""
        if self.config_schema is not None:
            validate_config(config, self.config_schema, file, field_name)

    @property
    def file(self) -> Path:
        return self.root / FILE

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @property
    def filter_name(self) -> str:
        return self.name


def scenario_config(project: Project, scenario_file: Path) -> Any:
    """The filter configuration a scenario runs with (its `config:`, else filter.yaml's), checked
    against the project's config schema: what `envoyext publish --scenario` carries."""
    from envoyext import scenario
    config = scenario.load(scenario_file, default_config=project.config).config
    project.check_config(config, scenario_file)
    return config


def find_root(path: Path | str | None) -> Path:
    p = Path(path or ".").resolve()
    if p.is_file() and p.name == FILE:
        return p.parent
    if (p / FILE).is_file():
        return p
    raise UserError(f"no {FILE} here", file=p,
                    fix="run inside a filter project, or create one with 'envoyext new blank NAME'")


def load(path: Path | str | None = None) -> Project:
    root = find_root(path)
    file = root / FILE
    data = schemas.load(file, "filter")
    lang = data["lang"]
    sources = [root / s for s in data.get("sources", [])]
    for i, s in enumerate(sources):
        if not s.is_file():
            raise UserError("source file not found", file=file, field=f"sources[{i}]",
                            fix=f"create {s.relative_to(root)} or correct the path")
    if lang == "lua":
        only_named = not sources and (data.get("lua") or {}).get("source_codes")
        if not only_named and (len(sources) != 1 or sources[0].suffix != ".lua"):
            raise UserError("a Lua filter has exactly one .lua source", file=file, field="sources",
                            fix="list one .lua file, e.g. sources: [filter.lua] (or only lua.source_codes)")
    elif lang == "c":
        if not sources or any(s.suffix not in (".c", ".h") for s in sources):
            raise UserError("a C filter lists its .c sources", file=file, field="sources",
                            fix="list the .c files, e.g. sources: [filter.c]")
    module = None
    if lang == "wasm":
        if "module" not in data:
            raise UserError("a prebuilt Wasm filter names its module", file=file, field="module",
                            fix="add module: path/to/filter.wasm")
        module = root / data["module"]
        if not module.is_file():
            raise UserError("module file not found", file=file, field="module",
                            fix=f"build it first, or correct the path ({module})")
        _check_wasm_header(module)
    config = data.get("config")
    config_schema = root / data["config_schema"] if "config_schema" in data else None
    if config_schema is not None:
        if not config_schema.is_file():
            raise UserError("schema file not found", file=file, field="config_schema", fix="correct the path")
        validate_config(config, config_schema, file, "config")
    scenario_files: list[Path] = []
    for i, pattern in enumerate(data.get("scenarios", ["scenarios/*.yaml"])):
        _check_listable(root / pattern, file, f"scenarios[{i}]")
        hits = sorted(Path(p) for p in glob.glob(str(root / pattern)))
        scenario_files += [h for h in hits if h not in scenario_files]
    lua_options = None
    if "lua" in data:
        if lang != "lua":
            raise UserError("'lua' options belong to a Lua filter", file=file, field="lua", fix="remove them")
        lua_options = {k: v for k, v in data["lua"].items() if k != "source_codes"}
        named = {}
        for name, rel in data["lua"].get("source_codes", {}).items():
            if not (root / rel).is_file():
                raise UserError("source file not found", file=file, field=f"lua.source_codes.{name}",
                                fix="create it or correct the path")
            named[name] = {"filename": str((root / rel).resolve())}
        if named:
            lua_options["source_codes"] = named
        if not sources:  # Envoy's default_source_code absent: per-route scripts only
            lua_options["default_source_code"] = False
    if "lua_libraries" in data and lang != "lua":
        raise UserError("'lua_libraries' belong to a Lua filter", file=file, field="lua_libraries", fix="remove them")
    lua_libraries = check_lua_libraries(data.get("lua_libraries", []), file=file)
    return Project(root=root, name=data["name"], lang=lang, sources=sources, module=module,
                   root_id=data.get("root_id", ""), vm_id=data.get("vm_id", ""),
                   failure_policy=FailurePolicy(data["failure_policy"]) if "failure_policy" in data else None,
                   config=config, attach=Attach(**data.get("attach", {})),
                   scenario_files=scenario_files, stats_tags=data.get("stats_tags", []),
                   config_schema=config_schema, lua_options=lua_options, lua_libraries=lua_libraries,
                   workers=data.get("workers", 1), mesh=_mesh_block(data.get("mesh"), root, file))


def _mesh_block(block: dict[str, Any] | None, root: Path, file: Path) -> dict[str, Any] | None:
    if block is None:
        return None
    listed = [block["resources"]] if isinstance(block["resources"], str) else block["resources"]
    paths = [root / p for p in listed]
    for i, p in enumerate(paths):
        if not p.exists():
            raise UserError("no such file or directory", file=file, field=f"mesh.resources[{i}]",
                            fix="give a path relative to the project")
    return {**block, "resources": paths}


def beside(artifact: Path) -> Project | None:
    """The project an artifact was built in: filter.yaml next to it, or above its build/ dir."""
    here = artifact.resolve().parent
    for root in (here, here.parent) if here.name == "build" else (here,):
        if (root / FILE).is_file():
            return load(root)
    return None


def artifact_for(path: Path, project: Project | None, *, root_id: str | None = None,
                 vm_id: str | None = None) -> Artifact:
    """A prebuilt .wasm or .lua as the given project configures it (its name, config, root_id,
    vm_id, failure_policy, lua options and libraries, stats_tags); without a project, named after the file."""
    kind = {".wasm": "wasm", ".lua": "lua"}.get(path.suffix)
    if kind is None:
        raise UserError("expected a .wasm or .lua file", file=path, fix="pass a built filter")
    if project is None:
        base = Artifact(kind=kind, path=path.resolve(), name=path.stem)
    else:
        if (kind == "lua") != (project.lang == "lua"):
            raise UserError(f"a .{path.suffix[1:]} artifact for a '{project.lang}' project", file=project.file,
                            field="lang", fix="pass the project's own artifact, or --project for this one")
        base = build_artifact(project, path)
    return dataclasses.replace(base, root_id=base.root_id if root_id is None else root_id,
                               vm_id=base.vm_id if vm_id is None else vm_id)


def _check_listable(pattern: Path, file: Path, field_name: str) -> None:
    """glob() silently finds nothing in a directory it may not list; say so instead."""
    folder = pattern.parent
    while glob.has_magic(str(folder)):
        folder = folder.parent
    if folder.is_dir() and not os.access(folder, os.R_OK | os.X_OK):
        raise UserError(f"cannot list {folder}: permission denied", file=file, field=field_name,
                        fix="make the directory readable by this user")


def _check_wasm_header(module: Path) -> None:
    """Every WebAssembly binary starts with \\0asm; anything else (a text file, a .wat, a truncated
    download) is named here rather than as Envoy's 'Unable to create Wasm plugin'."""
    from envoyext.errors import read_bytes
    if read_bytes(module, what="Wasm module")[:4] != b"\0asm":
        raise UserError("not a WebAssembly binary (it does not start with \\0asm)", file=module,
                        fix="give the compiled .wasm module (wat2wasm a .wat first)")


def validate_config(config: Any, schema_file: Path, file: Path, field_name: str) -> None:
    """A filter's JSON configuration against the filter's own schema (JSON or YAML)."""
    import jsonschema
    doc = _json_schema(schema_file)
    err = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(doc)(doc).iter_errors(config))
    if err is not None:
        where = schemas.field_path([field_name, *err.absolute_path])
        raise UserError(err.message, file=file, field=where, fix=f"see {schema_file.name} for the allowed values")


def _json_schema(schema_file: Path) -> Any:
    """The project's config_schema, checked to be a JSON Schema (against its metaschema)."""
    import jsonschema
    doc = schemas.read_yaml(schema_file)  # JSON is YAML; a read or syntax error names the schema file
    if not isinstance(doc, (dict, bool)):
        raise UserError("not a JSON Schema (expected an object)", file=schema_file,
                        fix="write a JSON Schema object, e.g. {\"type\": \"object\"}")
    try:
        jsonschema.validators.validator_for(doc).check_schema(doc)
    except jsonschema.exceptions.SchemaError as e:
        raise UserError(f"not a valid JSON Schema: {e.message}", file=schema_file,
                        field=schemas.field_path(e.absolute_path),
                        fix="correct the schema (see json-schema.org)") from None
    return doc


def _stale(out: Path, inputs: list[Path]) -> bool:
    if not out.exists():
        return True
    t = out.stat().st_mtime
    return any(p.stat().st_mtime > t for p in inputs if p.exists())


def build(project: Project, *, force: bool = False) -> Artifact:
    """Produce the artifact (`build/<name>.lua` or `build/<name>.wasm`); rebuilt only when stale."""
    try:
        return _build(project, force)
    except OSError as e:
        if e.filename is None:
            raise
        where = Path(e.filename)
        where = where.parent if where.name.endswith(".tmp") else where  # our temp name says nothing
        raise UserError(f"cannot write the build output: {e.strerror}", file=where,
                        fix="make the project's build/ directory writable") from None


def _build(project: Project, force: bool) -> Artifact:
    from envoyext import tempfiles
    from envoyext.build import c, lua

    if project.lang != "wasm":  # a prebuilt module needs no build dir
        project.build_dir.mkdir(exist_ok=True)
    if project.lang == "lua":
        named = [Path(n["filename"]) for n in (project.lua_options or {}).get("source_codes", {}).values()]
        for script in project.sources + named:
            lua.check_lua(script)
        # Without a default script the artifact is the first named one (the bootstrap inlines none).
        src = project.sources[0] if project.sources else named[0]
        out = project.build_dir / f"{project.name}.lua"
        if force or _stale(out, [src]):
            tmp = tempfiles.temp_beside(out)  # unique: two builds at once never share one
            try:
                shutil.copyfile(src, tmp)
                tmp.replace(out)
            finally:
                tmp.unlink(missing_ok=True)
    elif project.lang == "c":
        out = project.build_dir / f"{project.name}.wasm"
        # A newer SDK (an envoyext upgrade) rebuilds too.
        inputs = project.sources + sorted(project.root.glob("*.h")) + sorted(c.SDK_DIR.glob("*"))
        if force or _stale(out, inputs):
            c.compile_wasm([s for s in project.sources if s.suffix == ".c"], out, include_dirs=[project.root])
    else:
        out = project.module
    return build_artifact(project, out)


def build_artifact(project: Project, path: Path) -> Artifact:
    """The artifact at `path` with everything filter.yaml says about how it runs."""
    chosen = {} if project.failure_policy is None else {"failure_policy": project.failure_policy}
    return Artifact(kind="lua" if project.lang == "lua" else "wasm", path=path.resolve(), name=project.name,
                    root_id=project.root_id, vm_id=project.vm_id, config=project.config,
                    attach=project.attach, lua_options=project.lua_options, stats_tags=tuple(project.stats_tags),
                    lua_libraries=project.lua_libraries, **chosen)

