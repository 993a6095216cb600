"""The emulated Envoy, below the filter hosts it drives: the stream contract (`stream`), the HTTP/1
codec (`codec`), the router and its clusters (`router`) and the connection manager around them
(`connection_manager`). It imports neither host: `envoyext.wasm` and `envoyext.lua` implement its
`FilterHost` and `StreamFilter` protocols, and `envoyext.runners.emulated` joins the two."""
