"""What a cluster applies: the Istio resources that carry a built filter (EnvoyFilter for Lua,
WasmPlugin for Wasm). The mesh runner attaches a filter under test through these same resources,
so what `envoyext test` ran in the mesh is what `envoyext publish` emits."""
