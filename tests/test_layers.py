"""The package's layers: no import cycle between its modules, and the emulated Envoy below the
filter hosts it drives. The graph counts every import statement at any depth of a module
(function-local and `if TYPE_CHECKING:` ones too): a lazy import still ties two modules together."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import envoyext

PACKAGE = Path(envoyext.__file__).parent

Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules `path` imports: `from a import b` is module a.b when there is one."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in modules and t != name}
    return out


def import_graph() -> Graph:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ in on_path:
                return [*path[path.index(succ):], succ]
            if succ not in done:
                cycle = visit(succ)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_catches_a_cycle_and_passes_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_function_local_imports() -> None:
    graph = import_graph()
    # runners.emulated imports each host inside load_host(), only when it needs it.
    assert {"envoyext.wasm.emulator", "envoyext.lua.emulator"} <= graph["envoyext.runners.emulated"]
    assert "envoyext.emulated.stream" in graph["envoyext.emulated.connection_manager"]


def test_no_import_cycle_in_the_package() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_emulated_envoy_sits_below_the_filter_hosts_and_the_runners() -> None:
    above = ("envoyext.wasm", "envoyext.lua", "envoyext.runners")
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("envoyext.emulated"):
            assert not {t for t in targets if t.startswith(above)}, module
        if module.startswith(("envoyext.wasm", "envoyext.lua")):
            assert not {t for t in targets if t.startswith("envoyext.runners")}, module


def test_the_wasm_host_loads_without_the_runners() -> None:
    code = "import sys, envoyext.wasm.host, envoyext.wasm.api, envoyext.lua.api; " \
           "print(sorted(m for m in sys.modules if m.startswith('envoyext.runners')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
