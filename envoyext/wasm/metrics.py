"""Plugin metrics (proxy_define_metric & co.) with Envoy's ids, semantics and stat names.

Envoy keeps a plugin's metrics in its stats store, so they outlive a VM: a reloaded VM that
defines the same name gets the same stat back. Ids are per VM (cpp-host hands them out per
WasmBase); values live here, per name.
"""

from __future__ import annotations

from envoyext.wasm.abi import MetricType, WasmResult

# Envoy puts plugin-defined metrics in its custom stat namespace "wasmcustom". Admin /stats prints
# the namespaced name ("wasmcustom.foo"); /stats/prometheus strips the namespace ("foo").
CUSTOM_STAT_NAMESPACE = "wasmcustom"


def stat_name(name: str) -> str:
    """The name admin /stats gives a metric the plugin defined as `name`."""
    return f"{CUSTOM_STAT_NAMESPACE}.{name}"


class MetricStore:
    """Values by (type, name), shared by every VM of a plugin (and across reloads)."""

    def __init__(self):
        self.values: dict[tuple[MetricType, str], int] = {}
        self.samples: dict[str, list[int]] = {}

    def counters(self) -> dict[str, int]:
        return {n: v for (t, n), v in self.values.items() if t == MetricType.Counter}

    def gauges(self) -> dict[str, int]:
        return {n: v for (t, n), v in self.values.items() if t == MetricType.Gauge}

    def stats(self) -> dict[str, int]:
        """Counters and gauges under their /stats names (histograms have no single value there)."""
        return {stat_name(n): v for (t, n), v in self.values.items() if t != MetricType.Histogram}

    def gauge_names(self) -> set[str]:
        return {stat_name(n) for (t, n) in self.values if t == MetricType.Gauge}

    def histograms(self) -> dict[str, list[int]]:
        """Every value recorded, per histogram, under its /stats name."""
        return {stat_name(n): list(v) for n, v in self.samples.items()}


class VmMetrics:
    """One VM's metric ids: type in the low two bits, +4 per definition (cpp-host's scheme)."""

    def __init__(self, store: MetricStore):
        self.store = store
        self.ids: dict[int, tuple[MetricType, str]] = {}
        self.next = {MetricType.Counter: 0, MetricType.Gauge: 1, MetricType.Histogram: 2}

    def define(self, metric_type: int, name: str) -> tuple[WasmResult, int]:
        if metric_type > MetricType.MAX:
            return WasmResult.BadArgument, 0
        t = MetricType(metric_type)
        self.next[t] += 4
        mid = self.next[t]
        self.ids[mid] = (t, name)
        if t == MetricType.Histogram:
            self.store.samples.setdefault(name, [])
        else:
            self.store.values.setdefault((t, name), 0)
        return WasmResult.Ok, mid

    def increment(self, mid: int, offset: int) -> WasmResult:
        t = mid & 3
        if t == MetricType.Histogram or t == 3:
            return WasmResult.BadArgument
        key = self.ids.get(mid)
        if key is None:
            return WasmResult.NotFound
        if t == MetricType.Counter:
            if offset <= 0:
                return WasmResult.BadArgument
            self.store.values[key] += offset
        else:   # a gauge, clamped at zero
            self.store.values[key] = max(0, self.store.values[key] + offset)
        return WasmResult.Ok

    def record(self, mid: int, value: int) -> WasmResult:
        key = self.ids.get(mid)
        if key is None:
            return WasmResult.NotFound
        t, name = key
        if t == MetricType.Counter:
            self.store.values[key] += value
        elif t == MetricType.Gauge:
            self.store.values[key] = value
        else:
            self.store.samples[name].append(value)
        return WasmResult.Ok

    def get(self, mid: int) -> tuple[WasmResult, int]:
        t = mid & 3
        if t not in (MetricType.Counter, MetricType.Gauge):
            return WasmResult.BadArgument, 0
        key = self.ids.get(mid)
        if key is None:
            return WasmResult.NotFound, 0
        return WasmResult.Ok, self.store.values[key]
