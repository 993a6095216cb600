"""envoyext: author, build, test and ship Envoy Lua and proxy-wasm filters."""

__version__ = "0.1.0"
