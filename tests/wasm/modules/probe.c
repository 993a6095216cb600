/* probe: exercises every proxy-wasm host function, steered by the request's x-probe header.
 * It reports what it sees as log lines and headers, so the emulator and Envoy can be compared. */
#include "host_abi.h"
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>

EXPORT(proxy_abi_version_0_2_1) void abi_marker(void) {}

static uint32_t m_requests, m_gauge, m_hist, m_ticks, queue_token, root_id;
static char config[256];

static void logf_(uint32_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(uint32_t level, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  proxy_log(level, buf, n < (int)sizeof buf ? (size_t)n : sizeof buf - 1);
}

static char *hex(const char *p, size_t n) {
  static char out[512];
  size_t j = 0;
  for (size_t i = 0; i < n && j + 3 < sizeof out; i++) j += snprintf(out + j, 4, "%02x", (unsigned char)p[i]);
  out[j] = 0;
  return out;
}

/* per-stream state, indexed by context id */
typedef struct { uint32_t id; char cmd[64]; char arg[256]; uint32_t call_token; } stream_t;
static stream_t streams[64];
static stream_t *S(uint32_t id) { return &streams[id % 64]; }

static int get_header(uint32_t map, const char *key, char *out, size_t cap) {
  char *v = 0; size_t n = 0;
  st s = proxy_get_header_map_value(map, key, strlen(key), &v, &n);
  if (s != 0) { out[0] = 0; return -(int)s; }
  if (n >= cap) n = cap - 1;
  memcpy(out, v, n); out[n] = 0; free(v);
  return (int)n;
}

static int is(uint32_t id, const char *c) { return strcmp(S(id)->cmd, c) == 0; }

EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {
  if (parent == 0) { root_id = id; return; }
  stream_t *s = S(id); memset(s, 0, sizeof *s); s->id = id;
}

EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t id, uint32_t size) { return 1; }

EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t id, uint32_t size) {
  char *p = 0; size_t n = 0;
  proxy_get_buffer_bytes(BUF_PLUGIN_CONFIG, 0, size, &p, &n);
  if (n >= sizeof config) n = sizeof config - 1;
  if (p) { memcpy(config, p, n); free(p); }
  config[n] = 0;
  logf_(LOG_INFO, "configure size=%u config=%s", size, config);
  proxy_define_metric(0, "probe_requests", 14, &m_requests);
  proxy_define_metric(1, "probe_gauge", 11, &m_gauge);
  proxy_define_metric(2, "probe_hist", 10, &m_hist);
  proxy_define_metric(0, "probe_ticks", 11, &m_ticks);
  proxy_register_shared_queue("probe_q", 7, &queue_token);
  if (strstr(config, "tick")) proxy_set_tick_period_milliseconds(1000);
  if (strstr(config, "reject")) return 0;
  return 1;
}

EXPORT(proxy_on_tick) void on_tick(uint32_t id) {
  logf_(LOG_INFO, "tick");
  proxy_increment_metric(m_ticks, 1);
}

EXPORT(proxy_on_queue_ready) void on_queue_ready(uint32_t id, uint32_t token) {
  char *v = 0; size_t n = 0;
  st s = proxy_dequeue_shared_queue(token, &v, &n);
  logf_(LOG_INFO, "queue ready same_token=%d dequeue=%u value=%.*s", token == queue_token, s, (int)n, v ? v : "");
  free(v);
}

static void report_props(uint32_t id) {
  char list[256];
  strcpy(list, S(id)->arg);
  for (char *tok = strtok(list, ","); tok; tok = strtok(0, ",")) {
    char path[128]; size_t n = strlen(tok);
    memcpy(path, tok, n + 1);
    for (size_t i = 0; i < n; i++) if (path[i] == '.') path[i] = 0;
    char *v = 0; size_t vs = 0;
    st s = proxy_get_property(path, n, &v, &vs);
    logf_(LOG_INFO, "prop %s = %u %s", tok, s, s == 0 ? hex(v, vs) : "");
    free(v);
  }
}

static void bad_pointers(void) {
  char *v; size_t n; uint32_t u; uint64_t w;
  char *bad = (char *)0xfffffff0;
  logf_(LOG_INFO, "bad log=%u", proxy_log(LOG_INFO, bad, 100));
  logf_(LOG_INFO, "bad level=%u", proxy_log(9, "x", 1));
  logf_(LOG_INFO, "bad get_header key=%u", proxy_get_header_map_value(REQ_HEADERS, bad, 64, &v, &n));
  logf_(LOG_INFO, "bad get_header out=%u", proxy_get_header_map_value(REQ_HEADERS, ":path", 5, (char **)bad, &n));
  logf_(LOG_INFO, "bad map type=%u", proxy_get_header_map_value(99, ":path", 5, &v, &n));
  logf_(LOG_INFO, "bad add=%u", proxy_add_header_map_value(REQ_HEADERS, "a", 1, bad, 64));
  logf_(LOG_INFO, "bad size=%u", proxy_get_header_map_size(REQ_HEADERS, (uint32_t *)bad));
  logf_(LOG_INFO, "bad buffer type=%u", proxy_get_buffer_bytes(42, 0, 1, &v, &n));
  logf_(LOG_INFO, "bad time=%u", proxy_get_current_time_nanoseconds((uint64_t *)bad));
  logf_(LOG_INFO, "bad property=%u", proxy_get_property(bad, 8, &v, &n));
  logf_(LOG_INFO, "bad shared=%u", proxy_set_shared_data(bad, 8, "v", 1, 0));
  logf_(LOG_INFO, "bad queue=%u", proxy_register_shared_queue("q", 1, (uint32_t *)bad));
  logf_(LOG_INFO, "bad metric=%u", proxy_define_metric(7, "m", 1, &u));
  logf_(LOG_INFO, "bad metric ptr=%u", proxy_get_metric(m_requests, (uint64_t *)bad));
  logf_(LOG_INFO, "bad local=%u", proxy_send_local_response(500, bad, 10, "", 0, "", 0, -1));
  logf_(LOG_INFO, "bad continue=%u", proxy_continue_stream(9));
  logf_(LOG_INFO, "bad effective=%u", proxy_set_effective_context(99999));
  logf_(LOG_INFO, "bad log level=%u", proxy_get_log_level((uint32_t *)bad));
  logf_(LOG_INFO, "bad pairs=%u", proxy_set_header_map_pairs(REQ_HEADERS, bad, 16));
  logf_(LOG_INFO, "bad http_call token=%u", proxy_http_call("auth", 4, "", 0, "", 0, "", 0, 1000, (uint32_t *)bad));
  (void)w;
}

static void misc(uint32_t id) {
  char *v = 0; size_t n = 0; uint32_t code = 0, lvl = 99; uint64_t val = 0, t = 0;
  logf_(LOG_INFO, "ffi unknown=%u", proxy_call_foreign_function("nope", 4, "", 0, &v, &n));
  logf_(LOG_INFO, "grpc no cluster=%u", proxy_grpc_call("nope", 4, "svc", 3, "m", 1, "", 0, "", 0, 1000, &code));
  logf_(LOG_INFO, "done=%u", proxy_done());
  logf_(LOG_INFO, "close upstream=%u continue upstream=%u", proxy_close_stream(9), proxy_continue_stream(3));
  proxy_get_log_level(&lvl);
  logf_(LOG_INFO, "log level=%u", lvl);
  logf_(LOG_INFO, "time ok=%d", proxy_get_current_time_nanoseconds(&t) == 0 && t > 1600000000000000000ull);
  logf_(LOG_INFO, "counter dec=%u", proxy_increment_metric(m_requests, -1));
  logf_(LOG_INFO, "gauge inc=%u dec=%u", proxy_increment_metric(m_gauge, 5), proxy_increment_metric(m_gauge, -2));
  proxy_get_metric(m_gauge, &val);
  logf_(LOG_INFO, "gauge=%llu", (unsigned long long)val);
  logf_(LOG_INFO, "hist record=%u get=%u inc=%u", proxy_record_metric(m_hist, 7), proxy_get_metric(m_hist, &val),
        proxy_increment_metric(m_hist, 1));
  logf_(LOG_INFO, "unknown metric=%u", proxy_get_metric(4000, &val));
  logf_(LOG_INFO, "vm config=%u plugin config=%u call body=%u",
        proxy_get_buffer_bytes(BUF_VM_CONFIG, 0, 10, &v, &n), proxy_get_buffer_bytes(BUF_PLUGIN_CONFIG, 0, 10, &v, &n),
        proxy_get_buffer_bytes(BUF_CALL_BODY, 0, 10, &v, &n));
  logf_(LOG_INFO, "set property=%u", proxy_set_property("probe.k", 7, "v1", 2));
  v = 0; n = 0;
  st s = proxy_get_property("probe.k", 7, &v, &n);
  logf_(LOG_INFO, "get property=%u %.*s", s, (int)n, v ? v : "");
  uint32_t size = 0;
  proxy_get_header_map_size(REQ_HEADERS, &size);
  logf_(LOG_INFO, "trailers map=%u", proxy_get_header_map_size(REQ_TRAILERS, &size));
  printf("to stdout\n");
  fflush(stdout);
  fprintf(stderr, "to stderr\n");
}

static void shared(uint32_t id) {
  char *v = 0; size_t n = 0; uint32_t cas = 0;
  st g = proxy_get_shared_data("k", 1, &v, &n, &cas);
  logf_(LOG_INFO, "shared get=%u value=%.*s", g, (int)n, v ? v : "");
  st s1 = proxy_set_shared_data("k", 1, "a", 1, cas);
  st s2 = proxy_set_shared_data("k", 1, "b", 1, cas);   /* stale CAS once the key exists */
  logf_(LOG_INFO, "shared set=%u again=%u", s1, s2);
  free(v);
  uint32_t tok = 0;
  st r = proxy_resolve_shared_queue("", 0, "probe_q", 7, &tok);
  st r2 = proxy_resolve_shared_queue("", 0, "absent", 6, &tok);
  logf_(LOG_INFO, "resolve=%u absent=%u", r, r2);
  logf_(LOG_INFO, "enqueue=%u bad token=%u", proxy_enqueue_shared_queue(queue_token, "hello", 5),
        proxy_enqueue_shared_queue(777, "x", 1));
  logf_(LOG_INFO, "dequeue bad token=%u", proxy_dequeue_shared_queue(777, &v, &n));
}

static void pairs(uint32_t id) {
  char *p = 0; size_t n = 0;
  proxy_get_header_map_pairs(REQ_HEADERS, &p, &n);
  uint32_t count = n >= 4 ? *(uint32_t *)p : 0;
  char out[512]; size_t j = 0;
  char *data = p + 4 + 8 * count;
  for (uint32_t i = 0; i < count; i++) {
    uint32_t ks = ((uint32_t *)(p + 4))[2 * i], vs = ((uint32_t *)(p + 4))[2 * i + 1];
    if (data[0] != 'x' || data[1] != '-' || !strcmp(data, "x-request-id")) { data += ks + vs + 2; continue; }
    j += snprintf(out + j, sizeof out - j, "%.*s=%.*s;", (int)ks, data, (int)vs, data + ks + 1);
    data += ks + vs + 2;
  }
  out[j] = 0;
  logf_(LOG_INFO, "pairs %s", out);
  /* rewrite: same pairs plus x-set=1, via set_header_map_pairs */
  char buf[2048];
  memcpy(buf, p, n);
  free(p);
  (void)buf;
}

static void http_call(uint32_t id, const char *cluster) {
  char hdrs[256];
  const char *kv[][2] = {{":method", "GET"}, {":path", "/check"}, {":authority", "auth.local"}, {"x-probe-call", "1"}};
  uint32_t count = 4; char *p = hdrs;
  memcpy(p, &count, 4); p += 4;
  for (int i = 0; i < 4; i++) { uint32_t a = strlen(kv[i][0]), b = strlen(kv[i][1]); memcpy(p, &a, 4); memcpy(p + 4, &b, 4); p += 8; }
  for (int i = 0; i < 4; i++) { size_t a = strlen(kv[i][0]) + 1, b = strlen(kv[i][1]) + 1; memcpy(p, kv[i][0], a); p += a; memcpy(p, kv[i][1], b); p += b; }
  uint32_t token = 0;
  st s = proxy_http_call(cluster, strlen(cluster), hdrs, p - hdrs, "ping", 4, "", 0, 5000, &token);
  S(id)->call_token = token;
  logf_(LOG_INFO, "http_call %s=%u", cluster, s);
}

EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t id, uint32_t n, uint32_t eos) {
  stream_t *s = S(id);
  char path[128];
  get_header(REQ_HEADERS, "x-probe", s->cmd, sizeof s->cmd);
  get_header(REQ_HEADERS, "x-arg", s->arg, sizeof s->arg);
  get_header(REQ_HEADERS, ":path", path, sizeof path);
  logf_(LOG_INFO, "request headers path=%s eos=%u cmd=%s", path, eos, s->cmd);
  proxy_increment_metric(m_requests, 1);
  proxy_record_metric(m_gauge, 42);
  if (is(id, "add")) {
    proxy_add_header_map_value(REQ_HEADERS, "x-added", 7, "1", 1);
    proxy_add_header_map_value(REQ_HEADERS, "x-forwarded-proto", 17, "extra", 5);
    proxy_replace_header_map_value(REQ_HEADERS, "x-replace", 9, "new", 3);
    proxy_remove_header_map_value(REQ_HEADERS, "x-remove", 8);
    proxy_add_header_map_value(REQ_HEADERS, "x-multi", 7, "a", 1);
    proxy_add_header_map_value(REQ_HEADERS, "X-Multi", 7, "b", 1);
    char v[64];
    int r = get_header(REQ_HEADERS, "x-absent", v, sizeof v);
    logf_(LOG_INFO, "absent header=%d", r);
  } else if (is(id, "local")) {
    const char hdr[] = "\x01\x00\x00\x00\x07\x00\x00\x00\x01\x00\x00\x00x-local\0" "1\0";
    proxy_send_local_response(403, "denied by probe", 15, "nope", 4, hdr, sizeof hdr - 1, -1);
    return 0;   /* Continue, but the local reply wins */
  } else if (is(id, "call")) {
    http_call(id, s->arg[0] ? s->arg : "auth");
    return 1;
  } else if (is(id, "call-nowait")) {
    http_call(id, s->arg[0] ? s->arg : "auth");
  } else if (is(id, "props")) {
    report_props(id);
  } else if (is(id, "bad")) {
    bad_pointers();
  } else if (is(id, "misc")) {
    misc(id);
  } else if (is(id, "shared")) {
    shared(id);
  } else if (is(id, "pairs")) {
    pairs(id);
  } else if (is(id, "trap")) {
    __builtin_trap();
  } else if (is(id, "loop")) {
    volatile int x = 1;
    while (x) {}
  } else if (is(id, "grow")) {
    for (int i = 0; i < 100000; i++) {
      char *volatile m = malloc(1 << 20);
      if (!m) { logf_(LOG_INFO, "malloc failed at %d MiB", i); break; }
      m[0] = 1;
    }
  } else if (is(id, "pause")) {
    return 1;
  }
  return 0;
}

EXPORT(proxy_on_http_call_response) void on_http_call_response(uint32_t ctx, uint32_t token, uint32_t nh, uint32_t body, uint32_t nt) {
  uint32_t stream = 0;
  for (int i = 0; i < 64; i++) if (streams[i].call_token == token && streams[i].id) stream = streams[i].id;
  char status[16] = "";
  get_header(CALL_HEADERS, ":status", status, sizeof status);
  char *b = 0; size_t bn = 0;
  proxy_get_buffer_bytes(BUF_CALL_BODY, 0, body, &b, &bn);
  logf_(LOG_INFO, "http_call_response root=%d headers=%u body=%u status=%s", ctx == root_id, nh, body, status);
  free(b);
  if (!stream) return;
  st e = proxy_set_effective_context(stream);
  if (strcmp(status, "200") != 0) {
    proxy_send_local_response(401, "auth failed", 11, "unauthorized", 12, "", 0, -1);
    return;
  }
  proxy_add_header_map_value(REQ_HEADERS, "x-auth-status", 13, status, strlen(status));
  logf_(LOG_INFO, "effective=%u continue=%u", e, proxy_continue_stream(0));
}

EXPORT(proxy_on_request_body) uint32_t on_request_body(uint32_t id, uint32_t size, uint32_t eos) {
  logf_(LOG_INFO, "request body size=%u eos=%u", size, eos);
  if (is(id, "upper")) {
    if (!eos) return 1;   /* StopIterationAndBuffer */
    char *p = 0; size_t n = 0;
    proxy_get_buffer_bytes(BUF_REQ_BODY, 0, size, &p, &n);
    for (size_t i = 0; i < n; i++) if (p[i] >= 'a' && p[i] <= 'z') p[i] -= 32;
    proxy_set_buffer_bytes(BUF_REQ_BODY, 0, size, p, n);
    free(p);
  }
  return 0;
}

EXPORT(proxy_on_request_trailers) uint32_t on_request_trailers(uint32_t id, uint32_t n) {
  logf_(LOG_INFO, "request trailers n=%u", n);
  return 0;
}

EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t id, uint32_t n, uint32_t eos) {
  char status[16];
  get_header(RESP_HEADERS, ":status", status, sizeof status);
  logf_(LOG_INFO, "response headers status=%s eos=%u", status, eos);
  proxy_add_header_map_value(RESP_HEADERS, "x-probe-response", 16, "1", 1);
  if (is(id, "resp-local")) {
    proxy_send_local_response(502, "from response", 13, "replaced", 8, "", 0, -1);
  }
  if (is(id, "resp-trap")) __builtin_trap();
  return 0;
}

EXPORT(proxy_on_response_body) uint32_t on_response_body(uint32_t id, uint32_t size, uint32_t eos) {
  logf_(LOG_INFO, "response body size=%u eos=%u", size, eos);
  return 0;
}

EXPORT(proxy_on_log) void on_log(uint32_t id) {
  char status[16], path[128];
  get_header(RESP_HEADERS, ":status", status, sizeof status);
  get_header(REQ_HEADERS, ":path", path, sizeof path);
  uint32_t size = 0;
  logf_(LOG_INFO, "on_log status=%s path=%s size=%u", status, path, proxy_get_header_map_size(REQ_HEADERS, &size));
}

EXPORT(proxy_on_done) uint32_t on_done(uint32_t id) {
  if (id != root_id) logf_(LOG_DEBUG, "on_done stream");
  return 1;
}

EXPORT(proxy_on_delete) void on_delete(uint32_t id) {
  if (id != root_id) logf_(LOG_DEBUG, "on_delete stream");
}
