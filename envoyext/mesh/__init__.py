"""The mesh model: Istio resources to real Envoy sidecars and gateways, running locally.

resources (YAML → schema-checked Resources) → build (Resources → Mesh) → translate (Mesh → one
ProxyConfig per proxy, pure) → delivery (files Envoy watches) → runtime (Envoys + stand-in apps).
"""
