"""A built filter, ready to load: what every runner (emulated, live, mesh) and publish consume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Artifact:
    kind: Literal["lua", "wasm"]
    path: Path                 # the .lua script or the .wasm module
    name: str                  # filter name; for Wasm also the plugin name
    root_id: str = ""          # Wasm: root context id the plugin is configured under
    vm_id: str = ""            # Wasm: VMs with the same vm_id share shared data and queues
    config: Any = None         # default JSON configuration (a scenario's `config` overrides it)
    fail_open: bool = False    # Wasm: on a VM failure let traffic through instead of 503

    @property
    def filter_name(self) -> str:
        """The name in the HTTP filter chain (Lua route metadata is looked up under it)."""
        return self.name
