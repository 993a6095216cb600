"""Shared data and shared queues: the state VMs of one vm_id share, with cpp-host's semantics.

One `SharedState` stands for one Envoy process: every VM (every plugin, every reload) that
uses the same instance sees the same keys and queues, scoped by vm_id as in cpp-host.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from envoyext.wasm.abi import WasmResult


@dataclass
class _Queue:
    items: deque = field(default_factory=deque)
    ready: Callable[[int], None] | None = None   # wakes the registering root context


class SharedState:
    def __init__(self):
        self.data: dict[str, dict[bytes, tuple[bytes, int]]] = {}
        self._cas = 1
        self.queues: dict[int, _Queue] = {}
        self.queue_tokens: dict[tuple[str, bytes], int] = {}
        self._next_token = 1

    # -- key-value store (CAS: 0 means unconditional; every write gets a fresh non-zero CAS) ------
    def get(self, vm_id: str, key: bytes) -> tuple[WasmResult, bytes, int]:
        entry = self.data.get(vm_id, {}).get(key)
        if entry is None:
            return WasmResult.NotFound, b"", 0
        return WasmResult.Ok, entry[0], entry[1]

    def set(self, vm_id: str, key: bytes, value: bytes, cas: int) -> WasmResult:
        m = self.data.setdefault(vm_id, {})
        old = m.get(key)
        if old is not None and cas != 0 and cas != old[1]:
            return WasmResult.CasMismatch
        m[key] = (value, self._next_cas())
        return WasmResult.Ok

    def _next_cas(self) -> int:
        cas = self._cas
        self._cas = (self._cas + 1) & 0xFFFFFFFF or 1
        return cas

    def snapshot(self, vm_id: str) -> dict[bytes, bytes]:
        """One vm_id's keys and values (WasmPlugin.shared_data)."""
        return {k: v for k, (v, _) in self.data.get(vm_id, {}).items()}

    # -- queues ------------------------------------------------------------------------------------
    def register_queue(self, vm_id: str, name: bytes, ready: Callable[[int], None]) -> int:
        """Create or reopen; the last registrant is the one woken, as in cpp-host."""
        key = (vm_id, name)
        token = self.queue_tokens.get(key)
        if token is None:
            token = self._next_token
            self._next_token += 1
            self.queue_tokens[key] = token
            self.queues[token] = _Queue()
        self.queues[token].ready = ready
        return token

    def resolve_queue(self, vm_id: str, name: bytes) -> int:
        return self.queue_tokens.get((vm_id, name), 0)

    def enqueue(self, token: int, value: bytes) -> WasmResult:
        q = self.queues.get(token)
        if q is None:
            return WasmResult.NotFound
        q.items.append(value)
        if q.ready is not None:
            q.ready(token)
        return WasmResult.Ok

    def dequeue(self, token: int) -> tuple[WasmResult, bytes]:
        q = self.queues.get(token)
        if q is None:
            return WasmResult.NotFound, b""
        if not q.items:
            return WasmResult.Empty, b""
        return WasmResult.Ok, q.items.popleft()

    def queue_items(self, vm_id: str, name: bytes | str) -> list[bytes]:
        name = name.encode() if isinstance(name, str) else name
        token = self.queue_tokens.get((vm_id, name))
        return list(self.queues[token].items) if token else []
