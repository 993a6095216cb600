/*
 * sdk_probe.c - a filter for tests/build/test_sdk_minihost.py: each behaviour of the SDK
 * the tests look at is reachable through a request header `x-probe`, and the JSON reader
 * and pairs codec are exported as t_* functions the test calls directly.
 */
#include "proxy_wasm.h"

#include <stdio.h>
#include <string.h>

#define TEST_EXPORT(name) __attribute__((export_name(#name)))

typedef struct {
    uint32_t ticks;
    uint32_t counter;
} probe_root;

bool pw_on_configure(pw_root *root, const char *config, size_t len) {
    pw_json cfg;
    if (!pw_json_parse(config, len, &cfg)) return false;
    bool reject = false;
    if (pw_json_get_bool(cfg, "reject", &reject) && reject) return false;
    probe_root *r = calloc(1, sizeof *r);
    if (!r) return false;
    pw_define_metric(PW_METRIC_COUNTER, "probe_ticks", &r->counter);
    int64_t tick_ms = 0;
    if (pw_json_get_int(cfg, "tick_ms", &tick_ms)) pw_set_tick_period_ms((uint32_t)tick_ms);
    root->data = r;
    pw_logf(PW_LOG_INFO, "configured root %u with %zu bytes", root->id, len);
    return true;
}

void pw_on_root_delete(pw_root *root) { free(root->data); }

void pw_on_tick(pw_root *root) {
    probe_root *r = root->data;
    r->ticks++;
    pw_increment_metric(r->counter, 1);
}

void pw_on_create(pw_ctx *ctx) {
    ctx->data = malloc(32);
    snprintf(ctx->data, 32, "stream-%u", ctx->id);
}

void pw_on_delete(pw_ctx *ctx) { free(ctx->data); }

void pw_on_log(pw_ctx *ctx) { pw_logf(PW_LOG_INFO, "log %s", (char *)ctx->data); }

/* Defined so that proxy_on_done is exported: the build leaves out the export of a hook no source
 * mentions, and the tests drive the SDK's proxy_on_done (unknown streams, the finish sequence). */
bool pw_on_done(pw_ctx *ctx) {
    (void)ctx;
    return true;
}

static void add_u32(pw_map_type map, const char *name, uint32_t v) {
    char n[16];
    snprintf(n, sizeof n, "%u", v);
    pw_replace_header(map, name, n);
}

static bool is(const char *probe, const char *what) { return probe && strcmp(probe, what) == 0; }

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    (void)end_of_stream;
    add_u32(PW_MAP_HTTP_REQUEST_HEADERS, "x-ctx", ctx->id);
    add_u32(PW_MAP_HTTP_REQUEST_HEADERS, "x-root", ctx->root->id);
    pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-data", ctx->data);
    char *probe = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-probe");
    pw_action action = PW_CONTINUE;
    if (is(probe, "pairs")) {
        /* Read every pair, write them back reversed plus a count. */
        pw_headers h;
        if (pw_get_headers(PW_MAP_HTTP_REQUEST_HEADERS, &h) == PW_OK) {
            pw_header *rev = calloc(h.count + 1, sizeof *rev);
            for (size_t i = 0; i < h.count; i++) rev[i] = h.items[h.count - 1 - i];
            char n[16];
            snprintf(n, sizeof n, "%zu/%u", h.count, num_headers);
            rev[h.count] = (pw_header)PW_HEADER("x-pairs-count", n);
            pw_set_headers(PW_MAP_HTTP_REQUEST_HEADERS, rev, h.count + 1);
            free(rev);
        }
        pw_headers_free(&h);
    } else if (is(probe, "call")) {
        pw_header hs[] = {PW_HEADER(":method", "POST"), PW_HEADER(":path", "/check"),
                          PW_HEADER(":authority", "authz"), PW_HEADER("x-empty", "")};
        pw_header ts[] = {PW_HEADER("x-trailer", "t")};
        uint32_t token = 0;
        pw_status st = pw_http_call("authz_cluster", hs, 4, "payload", 7, ts, 1, 1500, &token);
        if (st == PW_OK) action = PW_PAUSE;
        else pw_logf(PW_LOG_ERROR, "http call: %s", pw_status_str(st));
    } else if (is(probe, "property")) {
        char *path = pw_get_property_str("request.path");
        pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-prop-path", path ? path : "(none)");
        free(path);
        int64_t code = -1;
        pw_status st = pw_get_property_int("response.code", &code);
        char n[32];
        snprintf(n, sizeof n, "%s:%lld", pw_status_str(st), (long long)code);
        pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-prop-code", n);
        char *missing = pw_get_property_str("no.such.thing");
        pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-prop-missing", missing ? "present" : "null");
        free(missing);
    } else if (is(probe, "deny")) {
        pw_header extra[] = {PW_HEADER("x-denied", "yes"), {"x-counted", 9, "abcdefgh", 3}};
        pw_send_local_response(401, "probe denied", "no\0way", 6, extra, 2, PW_GRPC_STATUS_NONE);
        action = PW_PAUSE;
    } else if (is(probe, "remove")) {
        pw_remove_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-remove-me");
        pw_add_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-added", "1");
        pw_add_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-added", "2");
        size_t bytes = 0;
        pw_get_header_map_size(PW_MAP_HTTP_REQUEST_HEADERS, &bytes);
        add_u32(PW_MAP_HTTP_REQUEST_HEADERS, "x-map-bytes", (uint32_t)bytes);
        char *none = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-remove-me");
        pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-removed", none ? "no" : "yes");
        free(none);
    } else if (is(probe, "shared")) {
        char *v = NULL;
        size_t len = 0;
        uint32_t cas = 0;
        pw_status st = pw_get_shared_data("k", &v, &len, &cas);
        pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-shared-first", pw_status_str(st));
        free(v);
        pw_set_shared_data("k", "v1", 2, 0);
        st = pw_get_shared_data("k", &v, &len, &cas);
        pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-shared-value", v);
        free(v);
        st = pw_set_shared_data("k", "v2", 2, cas + 100);
        pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-shared-stale-cas", pw_status_str(st));
        st = pw_set_shared_data("k", "v3", 2, cas);
        pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-shared-cas", pw_status_str(st));
    }
    free(probe);
    return action;
}

/* Upper-cases the request body once it is complete (the host buffers meanwhile). */
pw_action pw_on_request_body(pw_ctx *ctx, size_t body_size, bool end_of_stream) {
    (void)ctx;
    if (!end_of_stream) return PW_PAUSE;
    char *body = NULL;
    size_t len = 0;
    if (pw_get_buffer(PW_BUFFER_HTTP_REQUEST_BODY, 0, SIZE_MAX, &body, &len) != PW_OK) return PW_CONTINUE;
    for (size_t i = 0; i < len; i++)
        if (body[i] >= 'a' && body[i] <= 'z') body[i] = (char)(body[i] - 32);
    pw_replace_buffer(PW_BUFFER_HTTP_REQUEST_BODY, body, len);
    pw_append_buffer(PW_BUFFER_HTTP_REQUEST_BODY, "!", 1);
    char n[16];
    snprintf(n, sizeof n, "%zu", body_size);
    pw_log(PW_LOG_DEBUG, n);
    free(body);
    return PW_CONTINUE;
}

void pw_on_http_call_response(pw_root *root, pw_ctx *ctx, uint32_t token, uint32_t num_headers, size_t body_size,
                              uint32_t num_trailers) {
    (void)num_trailers;
    if (!ctx) {
        pw_logf(PW_LOG_WARN, "orphan response %u for root %u", token, root->id);
        return;
    }
    char *status = pw_get_header(PW_MAP_HTTP_CALL_RESPONSE_HEADERS, ":status");
    char *body = NULL;
    pw_get_buffer(PW_BUFFER_HTTP_CALL_RESPONSE_BODY, 0, body_size, &body, NULL);
    pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-call-status", status ? status : "none");
    pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-call-body", body);
    add_u32(PW_MAP_HTTP_REQUEST_HEADERS, "x-call-headers", num_headers);
    free(status);
    free(body);
    pw_continue_request();
}

/* ---- direct exports for the JSON reader and the pairs codec ---------------------------- */

static pw_json doc(const char *text, size_t len, bool *ok) {
    pw_json root = {NULL, 0};
    *ok = pw_json_parse(text, len, &root);
    return root;
}

TEST_EXPORT(t_json_valid) int t_json_valid(const char *text, size_t len) {
    bool ok;
    doc(text, len, &ok);
    return ok;
}

TEST_EXPORT(t_json_type) int t_json_type(const char *text, size_t len, const char *path) {
    bool ok;
    pw_json root = doc(text, len, &ok), v;
    if (!ok || !pw_json_find(root, path, &v)) return -1;
    return (int)pw_json_typeof(v);
}

TEST_EXPORT(t_json_string) char *t_json_string(const char *text, size_t len, const char *path, size_t *out_len) {
    bool ok;
    pw_json root = doc(text, len, &ok), v;
    if (!ok || !pw_json_find(root, path, &v)) return NULL;
    size_t n = 0;
    char tiny[4];
    pw_json_string(v, tiny, sizeof tiny, &n); /* exercises the too-small path */
    char *s = pw_json_strdup(v);
    if (s && out_len) *out_len = n;
    return s;
}

TEST_EXPORT(t_json_streq) int t_json_streq(const char *text, size_t len, const char *path, const char *s) {
    bool ok;
    pw_json root = doc(text, len, &ok), v;
    return ok && pw_json_find(root, path, &v) && pw_json_streq(v, s);
}

TEST_EXPORT(t_json_int) int t_json_int(const char *text, size_t len, const char *path, int64_t *out) {
    bool ok;
    pw_json root = doc(text, len, &ok);
    return ok && pw_json_get_int(root, path, out);
}

TEST_EXPORT(t_json_number) int t_json_number(const char *text, size_t len, const char *path, double *out) {
    bool ok;
    pw_json root = doc(text, len, &ok);
    return ok && pw_json_get_number(root, path, out);
}

TEST_EXPORT(t_json_bool) int t_json_bool(const char *text, size_t len, const char *path) {
    bool ok, b = false;
    pw_json root = doc(text, len, &ok);
    if (!ok || !pw_json_get_bool(root, path, &b)) return -1;
    return b;
}

TEST_EXPORT(t_json_count) int t_json_count(const char *text, size_t len, const char *path) {
    bool ok;
    pw_json root = doc(text, len, &ok), v;
    if (!ok || !pw_json_find(root, path, &v)) return -1;
    return (int)pw_json_count(v);
}

/* Keys of an object, NUL-separated, via pw_json_next (checks iteration order and decoding). */
TEST_EXPORT(t_json_keys) char *t_json_keys(const char *text, size_t len, const char *path, size_t *out_len) {
    bool ok;
    pw_json root = doc(text, len, &ok), obj, k, v;
    if (!ok || !pw_json_find(root, path, &obj)) return NULL;
    size_t pos = 0, n = 0;
    char *out = malloc(len + 1);
    while (pw_json_next(obj, &pos, &k, &v)) {
        size_t kl = 0;
        pw_json_string(k, out + n, len + 1 - n, &kl);
        n += kl + 1;
    }
    *out_len = n;
    return out;
}

/* Parse `buf` as pairs and serialize the result again: -1 on a parse failure. */
TEST_EXPORT(t_pairs_roundtrip) int t_pairs_roundtrip(const char *buf, size_t len, char **out, size_t *out_len) {
    pw_headers h;
    if (pw_parse_pairs(buf, len, &h) != PW_OK) return -1;
    pw_status st = pw_serialize_pairs(h.items, h.count, out, out_len);
    size_t n = h.count;
    pw_headers_free(&h);
    return st == PW_OK ? (int)n : -2;
}
