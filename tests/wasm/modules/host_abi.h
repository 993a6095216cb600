/* The proxy-wasm host functions, declared for C test modules (ABI v0.2.1 names and types).
 * Only for the host's own tests; plugin authors use envoyext/sdk/proxy_wasm.h. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define EXPORT(name) __attribute__((export_name(#name)))

typedef uint32_t st;  /* proxy_status_t */

IMPORT(proxy_log) st proxy_log(uint32_t level, const char *msg, size_t size);
IMPORT(proxy_get_log_level) st proxy_get_log_level(uint32_t *level);
IMPORT(proxy_get_current_time_nanoseconds) st proxy_get_current_time_nanoseconds(uint64_t *t);
IMPORT(proxy_set_tick_period_milliseconds) st proxy_set_tick_period_milliseconds(uint32_t ms);
IMPORT(proxy_get_buffer_bytes) st proxy_get_buffer_bytes(uint32_t type, uint32_t start, uint32_t len, char **ptr, size_t *size);
IMPORT(proxy_get_buffer_status) st proxy_get_buffer_status(uint32_t type, size_t *len, uint32_t *flags);
IMPORT(proxy_set_buffer_bytes) st proxy_set_buffer_bytes(uint32_t type, uint32_t start, uint32_t len, const char *data, size_t size);
IMPORT(proxy_get_header_map_value) st proxy_get_header_map_value(uint32_t type, const char *k, size_t ks, char **v, size_t *vs);
IMPORT(proxy_get_header_map_pairs) st proxy_get_header_map_pairs(uint32_t type, char **p, size_t *s);
IMPORT(proxy_set_header_map_pairs) st proxy_set_header_map_pairs(uint32_t type, const char *p, size_t s);
IMPORT(proxy_add_header_map_value) st proxy_add_header_map_value(uint32_t type, const char *k, size_t ks, const char *v, size_t vs);
IMPORT(proxy_replace_header_map_value) st proxy_replace_header_map_value(uint32_t type, const char *k, size_t ks, const char *v, size_t vs);
IMPORT(proxy_remove_header_map_value) st proxy_remove_header_map_value(uint32_t type, const char *k, size_t ks);
IMPORT(proxy_get_header_map_size) st proxy_get_header_map_size(uint32_t type, uint32_t *size);
IMPORT(proxy_get_property) st proxy_get_property(const char *path, size_t ps, char **v, size_t *vs);
IMPORT(proxy_set_property) st proxy_set_property(const char *path, size_t ps, const char *v, size_t vs);
IMPORT(proxy_get_shared_data) st proxy_get_shared_data(const char *k, size_t ks, char **v, size_t *vs, uint32_t *cas);
IMPORT(proxy_set_shared_data) st proxy_set_shared_data(const char *k, size_t ks, const char *v, size_t vs, uint32_t cas);
IMPORT(proxy_register_shared_queue) st proxy_register_shared_queue(const char *n, size_t ns, uint32_t *token);
IMPORT(proxy_resolve_shared_queue) st proxy_resolve_shared_queue(const char *vm, size_t vms, const char *n, size_t ns, uint32_t *token);
IMPORT(proxy_enqueue_shared_queue) st proxy_enqueue_shared_queue(uint32_t token, const char *v, size_t vs);
IMPORT(proxy_dequeue_shared_queue) st proxy_dequeue_shared_queue(uint32_t token, char **v, size_t *vs);
IMPORT(proxy_send_local_response) st proxy_send_local_response(uint32_t code, const char *d, size_t ds, const char *b, size_t bs, const char *h, size_t hs, int32_t grpc);
IMPORT(proxy_continue_stream) st proxy_continue_stream(uint32_t type);
IMPORT(proxy_close_stream) st proxy_close_stream(uint32_t type);
IMPORT(proxy_http_call) st proxy_http_call(const char *up, size_t us, const char *h, size_t hs, const char *b, size_t bs, const char *t, size_t ts, uint32_t timeout, uint32_t *token);
IMPORT(proxy_grpc_call) st proxy_grpc_call(const char *svc, size_t ss, const char *sn, size_t sns, const char *m, size_t ms, const char *md, size_t mds, const char *rq, size_t rs, uint32_t timeout, uint32_t *token);
IMPORT(proxy_define_metric) st proxy_define_metric(uint32_t type, const char *n, size_t ns, uint32_t *id);
IMPORT(proxy_increment_metric) st proxy_increment_metric(uint32_t id, int64_t delta);
IMPORT(proxy_record_metric) st proxy_record_metric(uint32_t id, uint64_t value);
IMPORT(proxy_get_metric) st proxy_get_metric(uint32_t id, uint64_t *value);
IMPORT(proxy_set_effective_context) st proxy_set_effective_context(uint32_t id);
IMPORT(proxy_done) st proxy_done(void);
IMPORT(proxy_call_foreign_function) st proxy_call_foreign_function(const char *n, size_t ns, const char *a, size_t as, char **r, size_t *rs);
IMPORT(proxy_get_status) st proxy_get_status(uint32_t *code, char **msg, size_t *ms);

enum { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_CRITICAL };
enum { REQ_HEADERS, REQ_TRAILERS, RESP_HEADERS, RESP_TRAILERS, GRPC_INITIAL, GRPC_TRAILING, CALL_HEADERS, CALL_TRAILERS };
enum { BUF_REQ_BODY, BUF_RESP_BODY, BUF_DOWN, BUF_UP, BUF_CALL_BODY, BUF_GRPC, BUF_VM_CONFIG, BUF_PLUGIN_CONFIG };

static inline void logs(uint32_t level, const char *s) { proxy_log(level, s, strlen(s)); }
