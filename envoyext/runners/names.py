"""The one name of each runner, in `--only`, testrun, observations, JSON results and reports.

Its own module so that runner modules can name their observations without importing the registry
(`envoyext.runners`), which imports them.
"""

EMULATED = "emulated"   # the filter in the emulated Envoy (Wasm host or Lua host), in-process
LIVE = "live"           # the filter in a real Envoy process (or container) on loopback
NATIVE = "native"       # live Envoy with the scenario's `oracle` (native filters) in place of the filter
MESH = "mesh"           # a modelled Istio mesh: a real Envoy per sidecar and gateway, stand-in apps
