/* No proxy_abi_version_* export: Envoy refuses to load it. */
#include <stdint.h>
#define EXPORT(name) __attribute__((export_name(#name)))
EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t id, uint32_t n, uint32_t eos) { return 0; }
EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {}
