/*
 * sdk_smoke.c - a small HTTP filter exercising the envoyext C SDK end to end.
 *
 * Configuration (JSON):
 *   {"header": "x-sdk", "value": "hello", "deny_path": "/deny",
 *    "auth_path": "/auth", "auth_cluster": "authz"}
 *
 * - every request gets `x-sdk-request: seen` and bumps the counter
 *   `sdk_smoke_requests` (Envoy shows it as wasmcustom.sdk_smoke_requests);
 * - a request for `deny_path` is answered locally: 403, body "denied by sdk_smoke\n",
 *   header `x-denied-by: sdk_smoke`;
 * - every response gets `<header>: <value>` and `x-sdk-path-len: <length of :path>`,
 *   the latter carried in per-stream state;
 * - a request for `auth_path` is paused while GET /check goes to cluster `auth_cluster`; the
 *   answer's status and body come back as request headers `x-auth-status`, `x-auth-body`
 *   before the request continues.
 */
#include "proxy_wasm.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    char *header;
    char *value;
    char *deny_path;
    char *auth_path;
    char *auth_cluster;
    uint32_t requests; /* metric id */
} config;

typedef struct {
    size_t path_len;
} stream;

bool pw_on_configure(pw_root *root, const char *text, size_t len) {
    pw_json cfg;
    if (!pw_json_parse(text, len, &cfg) || pw_json_typeof(cfg) != PW_JSON_OBJECT) {
        pw_log(PW_LOG_ERROR, "sdk_smoke: configuration is not a JSON object");
        return false;
    }
    config *c = calloc(1, sizeof *c);
    if (!c) return false;
    c->header = pw_json_get_string(cfg, "header");
    c->value = pw_json_get_string(cfg, "value");
    c->deny_path = pw_json_get_string(cfg, "deny_path");
    c->auth_path = pw_json_get_string(cfg, "auth_path");
    c->auth_cluster = pw_json_get_string(cfg, "auth_cluster");
    if (!c->header) c->header = strdup("x-sdk");
    if (!c->value) c->value = strdup("on");
    pw_define_metric(PW_METRIC_COUNTER, "sdk_smoke_requests", &c->requests);
    root->data = c;
    pw_logf(PW_LOG_INFO, "sdk_smoke: configured %s=%s", c->header, c->value);
    return true;
}

void pw_on_root_delete(pw_root *root) {
    config *c = root->data;
    if (!c) return;
    free(c->header);
    free(c->value);
    free(c->deny_path);
    free(c->auth_path);
    free(c->auth_cluster);
    free(c);
}

void pw_on_create(pw_ctx *ctx) { ctx->data = calloc(1, sizeof(stream)); }

void pw_on_delete(pw_ctx *ctx) { free(ctx->data); }

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    (void)num_headers, (void)end_of_stream;
    config *c = ctx->root->data;
    stream *s = ctx->data;
    if (c) pw_increment_metric(c->requests, 1);
    char *path = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, ":path");
    if (s && path) s->path_len = strlen(path);
    bool deny = c && c->deny_path && path && strcmp(path, c->deny_path) == 0;
    bool auth = c && c->auth_path && c->auth_cluster && path && strcmp(path, c->auth_path) == 0;
    free(path);
    if (auth) {
        pw_header hs[] = {PW_HEADER(":method", "GET"), PW_HEADER(":path", "/check"),
                          PW_HEADER(":authority", "authz")};
        uint32_t token;
        pw_status st = pw_http_call(c->auth_cluster, hs, 3, NULL, 0, NULL, 0, 5000, &token);
        if (st == PW_OK) return PW_PAUSE;
        pw_logf(PW_LOG_ERROR, "sdk_smoke: http call failed: %s", pw_status_str(st));
    }
    if (deny) {
        pw_header extra[] = {PW_HEADER("x-denied-by", "sdk_smoke")};
        pw_respond(403, "denied by sdk_smoke\n", extra, 1);
        return PW_PAUSE;
    }
    pw_add_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-sdk-request", "seen");
    return PW_CONTINUE;
}

pw_action pw_on_response_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    (void)num_headers, (void)end_of_stream;
    config *c = ctx->root->data;
    stream *s = ctx->data;
    if (c) pw_replace_header(PW_MAP_HTTP_RESPONSE_HEADERS, c->header, c->value);
    if (s) {
        char n[24];
        snprintf(n, sizeof n, "%zu", s->path_len);
        pw_replace_header(PW_MAP_HTTP_RESPONSE_HEADERS, "x-sdk-path-len", n);
    }
    return PW_CONTINUE;
}

/* The call's answer: `ctx` is the paused stream, already the effective context. */
void pw_on_http_call_response(pw_root *root, pw_ctx *ctx, uint32_t token, uint32_t num_headers, size_t body_size,
                              uint32_t num_trailers) {
    (void)root, (void)token, (void)num_trailers;
    if (!ctx) return; /* the stream went away meanwhile */
    char *status = num_headers ? pw_get_header(PW_MAP_HTTP_CALL_RESPONSE_HEADERS, ":status") : NULL;
    char *body = NULL;
    pw_get_buffer(PW_BUFFER_HTTP_CALL_RESPONSE_BODY, 0, body_size, &body, NULL);
    pw_add_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-auth-status", status ? status : "failed");
    pw_add_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-auth-body", body ? body : "");
    free(status);
    free(body);
    pw_continue_request();
}
