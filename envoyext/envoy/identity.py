"""Who one Envoy is: the names a proxy's config, its runtime and its observers must agree on.

The single-filter test proxy is one `ProxyIdentity()` with the defaults below; a modelled mesh has
one per sidecar and gateway (Istio's node ids look like `sidecar~10.0.0.1~reviews-v1.default~...`,
and each has several listeners and stat prefixes). Everything that used to hard-code `"envoyext"`
or `"ingress_http"` (the bootstrap, the readiness wait, the settle poll, the emulators' stat names
and node properties, log parsing) takes these from here instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProxyIdentity:
    name: str = "envoyext"                # how observations and reports name this proxy
    node_id: str = "envoyext"             # bootstrap node.id (Wasm property node.id)
    node_cluster: str = "envoyext"        # bootstrap node.cluster (Wasm property node.cluster)
    listener: str = "envoyext"            # the listener the test client talks to
    stat_prefix: str = "ingress_http"     # its HTTP connection manager's stat_prefix
    admin_port: int = 0                   # 0: the kernel picks one (read back from --admin-address-path)
    log_level: str = "info"               # Envoy's -l
    component_log_level: str = "wasm:trace,lua:trace"   # Envoy's --component-log-level

    def at_log_level(self, level: str) -> "ProxyIdentity":
        """This proxy with Envoy and every component (wasm, lua) at `level`: what production runs
        (`warning`) for benchmarks, where the tests' trace logging would be what is measured."""
        from dataclasses import replace
        return replace(self, log_level=level, component_log_level=f"wasm:{level},lua:{level}")

    @property
    def hcm_stats(self) -> str:
        """The prefix of the connection manager's stats at admin /stats: `http.<stat_prefix>.`."""
        return f"http.{self.stat_prefix}."


# The single-filter test proxy.
TEST_PROXY = ProxyIdentity()
