/* The smallest filter: every callback continues. For the benchmark's baseline. */
#include <stdint.h>
#define EXPORT(name) __attribute__((export_name(#name)))
EXPORT(proxy_abi_version_0_2_1) void abi(void) {}
EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {}
EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t id, uint32_t n, uint32_t eos) { return 0; }
EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t id, uint32_t n, uint32_t eos) { return 0; }
EXPORT(proxy_on_request_body) uint32_t on_request_body(uint32_t id, uint32_t n, uint32_t eos) { return 0; }
EXPORT(proxy_on_response_body) uint32_t on_response_body(uint32_t id, uint32_t n, uint32_t eos) { return 0; }
EXPORT(proxy_on_log) void on_log(uint32_t id) {}
EXPORT(proxy_on_done) uint32_t on_done(uint32_t id) { return 1; }
EXPORT(proxy_on_delete) void on_delete(uint32_t id) {}
