/*
 * ext-authz: Envoy's envoy.filters.http.ext_authz (HTTP authorization service) as a proxy-wasm
 * filter.
 *
 * Every request is first sent, without its body, to an authorization service (a cluster). A 200
 * answer lets it through, carrying chosen headers of that answer upstream; any other non-5xx
 * answer is returned to the client (status, body, chosen headers); a 5xx, a timeout or a
 * connection failure is an error: 403 (or `status_on_error`) unless `failure_mode_allow`.
 * The configuration is Envoy's ExtAuthz JSON for an http_service (../schema.json); the counters
 * are Envoy's (ext_authz.ok, .denied, .error, .failure_mode_allowed) under `wasmcustom.`.
 */
#include <stdio.h>
#include <string.h>

#include "proxy_wasm.h"

#define AUTH_HEADERS_TO_REMOVE "x-envoy-auth-headers-to-remove"

/* Envoy's ListStringMatcher on header names. */
typedef struct matcher_list {
    pw_string_matcher *items; /* Envoy's StringMatcher, linear-time regex (pw_match.h) */
    size_t n;
} matcher_list;

typedef struct config {
    char *cluster;
    uint32_t timeout_ms;
    char *path_prefix;
    pw_header *headers_to_add; /* keys lower-cased, strings owned */
    size_t n_headers_to_add;
    matcher_list allowed_headers, upstream, client, client_on_success;
    bool failure_mode_allow;
    uint32_t status_on_error;
    uint32_t m_ok, m_denied, m_error, m_failure_mode_allowed;
} config;

/* Per stream: headers of a 200 answer to add to the client's response. */
typedef struct stream {
    pw_header *on_success;
    size_t n_on_success;
} stream;

/* ---- small helpers --------------------------------------------------------------------------- */

static void lower(char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z') s[i] = (char)(s[i] + 32);
}

static char *dup_n(const char *s, size_t n) {
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, s, n);
        out[n] = 0;
    }
    return out;
}

static bool list_matches(const matcher_list *l, const char *s, size_t n) {
    for (size_t i = 0; i < l->n; i++)
        if (pw_string_matcher_matches(&l->items[i], s, n)) return true;
    return false;
}

static bool add_exact(matcher_list *l, const char *name) {
    char err[32];
    if (!pw_string_matcher_init(&l->items[l->n], PW_MATCH_EXACT, name, strlen(name), false, err, sizeof err))
        return false;
    l->n++;
    return true;
}

/* {patterns: [...]} at `path`, plus `extra` exact names when the list is not empty. */
static bool parse_list(pw_json cfg, const char *path, matcher_list *out, const char *const *extra, size_t n_extra) {
    pw_json patterns, item;
    memset(out, 0, sizeof *out);
    if (!pw_json_find(cfg, path, &patterns)) return true;
    size_t count = pw_json_count(patterns);
    if (count == 0) return true;
    out->items = calloc(count + n_extra, sizeof *out->items);
    if (!out->items) return false;
    for (size_t i = 0; pw_json_index(patterns, i, &item); i++) {
        char field[96];
        snprintf(field, sizeof field, "ext-authz: %s[%zu]", path, i);
        if (!pw_json_string_matcher(item, field, &out->items[out->n])) return false;
        out->n++;
    }
    for (size_t i = 0; i < n_extra; i++)
        if (!add_exact(out, extra[i])) return false;
    return true;
}

static void free_list(matcher_list *l) {
    for (size_t i = 0; i < l->n; i++) pw_string_matcher_free(&l->items[i]);
    free(l->items);
}

static void free_config(config *c) {
    if (!c) return;
    free(c->cluster);
    free(c->path_prefix);
    for (size_t i = 0; i < c->n_headers_to_add; i++) {
        free((char *)c->headers_to_add[i].key);
        free((char *)c->headers_to_add[i].value);
    }
    free(c->headers_to_add);
    free_list(&c->allowed_headers);
    free_list(&c->upstream);
    free_list(&c->client);
    free_list(&c->client_on_success);
    free(c);
}

/* google.protobuf.Duration in JSON ("0.25s") as whole milliseconds; 0 if malformed. */
static uint32_t duration_ms(const char *s) {
    uint64_t whole = 0, frac = 0, scale = 1;
    const char *p = s;
    while (*p >= '0' && *p <= '9' && whole < 100000000) whole = whole * 10 + (uint64_t)(*p++ - '0');
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++)
            if (scale < 1000000000) { frac = frac * 10 + (uint64_t)(*p - '0'); scale *= 10; }
    }
    if (p == s || strcmp(p, "s") != 0) return 0;
    uint64_t ms = whole * 1000 + (frac * 1000 + scale / 2) / scale;
    return ms == 0 ? 1 : (ms > 0xffffffffu ? 0xffffffffu : (uint32_t)ms);
}

/* ---- configuration ------------------------------------------------------------------------- */

bool pw_on_configure(pw_root *root, const char *text, size_t len) {
    /* With allowed_client_headers set, Envoy still lets these reach the client on a denial. */
    static const char *const denied_defaults[] = {"content-length", "www-authenticate", "location"};
    pw_json cfg, list, item;
    config *c = calloc(1, sizeof *c);
    if (!c) return false;
    if (!pw_json_parse(text, len, &cfg) || pw_json_typeof(cfg) != PW_JSON_OBJECT) {
        pw_log(PW_LOG_ERROR, "ext-authz: the configuration is not a JSON object");
        goto bad;
    }
    c->cluster = pw_json_get_string(cfg, "http_service.server_uri.cluster");
    char *timeout = pw_json_get_string(cfg, "http_service.server_uri.timeout");
    c->timeout_ms = timeout ? duration_ms(timeout) : 0;
    free(timeout);
    if (!c->cluster || !c->cluster[0] || c->timeout_ms == 0) {
        pw_log(PW_LOG_ERROR, "ext-authz: http_service.server_uri needs a cluster and a timeout like \"0.25s\"");
        goto bad;
    }
    c->path_prefix = pw_json_get_string(cfg, "http_service.path_prefix");
    if (!c->path_prefix) c->path_prefix = dup_n("", 0);

    if (pw_json_find(cfg, "http_service.authorization_request.headers_to_add", &list)) {
        c->headers_to_add = calloc(pw_json_count(list) + 1, sizeof(pw_header));
        if (!c->headers_to_add) goto bad;
        for (size_t i = 0; pw_json_index(list, i, &item); i++) {
            char *key = pw_json_get_string(item, "key"), *value = pw_json_get_string(item, "value");
            if (!key) { free(value); goto bad; }
            lower(key, strlen(key));
            c->headers_to_add[i] = (pw_header){key, strlen(key), value ? value : dup_n("", 0), 0};
            c->headers_to_add[i].value_len = strlen(c->headers_to_add[i].value);
            c->n_headers_to_add = i + 1;
        }
    }
    if (!parse_list(cfg, "allowed_headers.patterns", &c->allowed_headers, NULL, 0) ||
        !parse_list(cfg, "http_service.authorization_response.allowed_upstream_headers.patterns", &c->upstream, NULL, 0) ||
        !parse_list(cfg, "http_service.authorization_response.allowed_client_headers.patterns", &c->client,
                    denied_defaults, sizeof denied_defaults / sizeof denied_defaults[0]) ||
        !parse_list(cfg, "http_service.authorization_response.allowed_client_headers_on_success.patterns",
                    &c->client_on_success, NULL, 0))
        goto bad;
    pw_json_get_bool(cfg, "failure_mode_allow", &c->failure_mode_allow);
    int64_t code = 403;
    pw_json_get_int(cfg, "status_on_error.code", &code);
    if (code < 200 || code > 599) {
        pw_log(PW_LOG_ERROR, "ext-authz: status_on_error.code must be 200-599");
        goto bad;
    }
    c->status_on_error = (uint32_t)code;

    pw_define_metric(PW_METRIC_COUNTER, "ext_authz.ok", &c->m_ok);
    pw_define_metric(PW_METRIC_COUNTER, "ext_authz.denied", &c->m_denied);
    pw_define_metric(PW_METRIC_COUNTER, "ext_authz.error", &c->m_error);
    pw_define_metric(PW_METRIC_COUNTER, "ext_authz.failure_mode_allowed", &c->m_failure_mode_allowed);
    free_config(root->data);
    root->data = c;
    return true;
bad:
    free_config(c);
    return false; /* Envoy rejects the configuration: an authorization filter must not half-work */
}

void pw_on_root_delete(pw_root *root) {
    free_config(root->data);
    root->data = NULL;
}

/* ---- the check request ------------------------------------------------------------------------ */

/* Set `key` in `out` (replacing) or, with join, append ",value" to an existing one.
 * Keys are borrowed; values are owned by `out`. */
static bool put(pw_header *out, size_t *n, const char *key, size_t key_len, const char *value, size_t value_len,
                bool join) {
    for (size_t i = 0; i < *n; i++) {
        if (out[i].key_len != key_len || memcmp(out[i].key, key, key_len) != 0) continue;
        size_t base = join ? out[i].value_len + 1 : 0;
        char *v = malloc(base + value_len + 1);
        if (!v) return false;
        if (join) {
            memcpy(v, out[i].value, out[i].value_len);
            v[out[i].value_len] = ',';
        }
        memcpy(v + base, value, value_len);
        v[base + value_len] = 0;
        free((char *)out[i].value);
        out[i].value = v;
        out[i].value_len = base + value_len;
        return true;
    }
    char *v = dup_n(value, value_len);
    if (!v) return false;
    out[(*n)++] = (pw_header){key, key_len, v, value_len};
    return true;
}

/* An error (no answer, or a 5xx): fail closed with status_on_error, or open if configured.
 * Returns true when the request goes on; `resume` says it is paused and must be resumed. */
static bool on_error(config *c, bool resume) {
    pw_increment_metric(c->m_error, 1);
    if (c->failure_mode_allow) {
        pw_increment_metric(c->m_failure_mode_allowed, 1);
        if (resume) pw_continue_request();
        return true;
    }
    pw_send_local_response(c->status_on_error, "ext_authz_error", NULL, 0, NULL, 0, PW_GRPC_STATUS_NONE);
    return false;
}

/* Send the client's method, path (behind path_prefix) and host, no body, and the allowed headers
 * (authorization always), repeated ones joined with "," as Envoy's CheckRequest carries them. */
pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    (void)num_headers;
    (void)end_of_stream;
    config *c = ctx->root->data;
    pw_headers req = {0};
    pw_header *out = NULL;
    size_t n = 0;
    bool ok = false;
    uint32_t token;
    if (!c) return PW_CONTINUE;
    if (pw_get_headers(PW_MAP_HTTP_REQUEST_HEADERS, &req) != PW_OK) goto done;
    out = calloc(req.count + c->n_headers_to_add + 4, sizeof(pw_header));
    if (!out) goto done;
    const char *method = pw_headers_get(&req, ":method"), *path = pw_headers_get(&req, ":path"),
               *host = pw_headers_get(&req, ":authority");
    size_t prefix_len = strlen(c->path_prefix), path_len = path ? strlen(path) : 1;
    char *full_path = malloc(prefix_len + path_len + 1);
    if (!full_path) goto done;
    memcpy(full_path, c->path_prefix, prefix_len);
    memcpy(full_path + prefix_len, path ? path : "/", path_len + 1);
    out[n++] = (pw_header){":path", 5, full_path, prefix_len + path_len};
    ok = put(out, &n, ":method", 7, method ? method : "GET", strlen(method ? method : "GET"), false) &&
         put(out, &n, ":authority", 10, host ? host : "", strlen(host ? host : ""), false) &&
         put(out, &n, "content-length", 14, "0", 1, false);
    for (size_t i = 0; ok && i < req.count; i++) {
        const pw_header *h = &req.items[i];
        if (h->key_len == 0 || h->key[0] == ':' || (h->key_len == 14 && !memcmp(h->key, "content-length", 14))) continue;
        bool allowed = (h->key_len == 13 && !memcmp(h->key, "authorization", 13)) ||
                       list_matches(&c->allowed_headers, h->key, h->key_len);
        if (allowed) ok = put(out, &n, h->key, h->key_len, h->value, h->value_len, true);
    }
    for (size_t i = 0; ok && i < c->n_headers_to_add; i++) {
        const pw_header *h = &c->headers_to_add[i];
        ok = put(out, &n, h->key, h->key_len, h->value, h->value_len, false);
    }
    if (ok && pw_http_call(c->cluster, out, n, NULL, 0, NULL, 0, c->timeout_ms, &token) != PW_OK) {
        pw_log(PW_LOG_WARN, "ext-authz: cannot call the authorization cluster (is it defined?)");
        ok = false;
    }
done:
    for (size_t i = 0; out && i < n; i++) free((char *)out[i].value);
    free(out);
    pw_headers_free(&req);
    if (!ok) /* The check could not even be sent: an error, like an unknown cluster in Envoy. */
        return on_error(c, false) ? PW_CONTINUE : PW_PAUSE;
    return PW_PAUSE; /* until the answer arrives */
}

/* ---- the answer ------------------------------------------------------------------------------- */

static bool is(const pw_header *h, const char *name) {
    return h->key_len == strlen(name) && memcmp(h->key, name, h->key_len) == 0;
}

static void allow(pw_ctx *ctx, config *c, const pw_headers *answer) {
    stream *s = ctx->data;
    for (size_t i = 0; i < answer->count; i++) {
        const pw_header *h = &answer->items[i];
        if (h->key_len == 0 || h->key[0] == ':') continue;
        if (is(h, AUTH_HEADERS_TO_REMOVE)) {
            /* A comma-separated list of request headers the service wants gone. */
            const char *p = h->value, *end = h->value + h->value_len;
            while (p < end) {
                while (p < end && (*p == ',' || *p == ' ' || *p == '\t')) p++;
                const char *q = p;
                while (q < end && *q != ',' && *q != ' ' && *q != '\t') q++;
                if (q > p) {
                    char *name = dup_n(p, (size_t)(q - p));
                    if (name) {
                        lower(name, strlen(name));
                        pw_remove_header(PW_MAP_HTTP_REQUEST_HEADERS, name);
                        free(name);
                    }
                }
                p = q;
            }
            continue;
        }
        if (list_matches(&c->upstream, h->key, h->key_len))
            pw_replace_header_n(PW_MAP_HTTP_REQUEST_HEADERS, h->key, h->key_len, h->value, h->value_len);
        if (list_matches(&c->client_on_success, h->key, h->key_len)) {
            if (!s && (s = ctx->data = calloc(1, sizeof *s)) == NULL) continue;
            pw_header *grown = realloc(s->on_success, (s->n_on_success + 1) * sizeof *grown);
            if (!grown) continue;
            s->on_success = grown;
            char *k = dup_n(h->key, h->key_len), *v = dup_n(h->value, h->value_len);
            if (!k || !v) { free(k); free(v); continue; }
            s->on_success[s->n_on_success++] = (pw_header){k, h->key_len, v, h->value_len};
        }
    }
    pw_continue_request();
}

static void deny(config *c, uint32_t status, const pw_headers *answer, size_t body_size) {
    pw_header *out = calloc(answer->count + 1, sizeof *out);
    size_t n = 0;
    char *body = NULL;
    size_t body_len = 0;
    bool all = c->client.n == 0; /* no list: every header but host */
    for (size_t i = 0; out && i < answer->count; i++) {
        const pw_header *h = &answer->items[i];
        if (h->key_len == 0 || h->key[0] == ':' || is(h, AUTH_HEADERS_TO_REMOVE)) continue;
        if (all ? !is(h, "host") : list_matches(&c->client, h->key, h->key_len)) out[n++] = *h;
    }
    if (body_size) pw_get_buffer(PW_BUFFER_HTTP_CALL_RESPONSE_BODY, 0, body_size, &body, &body_len);
    pw_send_local_response(status, "ext_authz_denied", body, body_len, out, n, PW_GRPC_STATUS_NONE);
    free(body);
    free(out);
}

void pw_on_http_call_response(pw_root *root, pw_ctx *ctx, uint32_t token, uint32_t num_headers, size_t body_size,
                              uint32_t num_trailers) {
    (void)token;
    (void)num_trailers;
    config *c = root->data;
    if (!ctx || !c) return; /* the client went away meanwhile */
    pw_headers answer = {0};
    const char *status_text = NULL;
    if (num_headers > 0 && pw_get_headers(PW_MAP_HTTP_CALL_RESPONSE_HEADERS, &answer) == PW_OK)
        status_text = pw_headers_get(&answer, ":status");
    uint32_t status = 0;
    for (const char *p = status_text; p && *p >= '0' && *p <= '9' && status < 1000; p++) status = status * 10 + (uint32_t)(*p - '0');

    if (status == 200) {
        pw_increment_metric(c->m_ok, 1);
        allow(ctx, c, &answer);
    } else if (status < 100 || status >= 500) {
        on_error(c, true); /* a reset, a timeout, no connection, or the service failing */
    } else {
        pw_increment_metric(c->m_denied, 1);
        deny(c, status, &answer, body_size);
    }
    pw_headers_free(&answer);
}

pw_action pw_on_response_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    (void)num_headers;
    (void)end_of_stream;
    stream *s = ctx->data;
    for (size_t i = 0; s && i < s->n_on_success; i++)
        pw_add_header_n(PW_MAP_HTTP_RESPONSE_HEADERS, s->on_success[i].key, s->on_success[i].key_len,
                        s->on_success[i].value, s->on_success[i].value_len);
    return PW_CONTINUE;
}

void pw_on_delete(pw_ctx *ctx) {
    stream *s = ctx->data;
    if (!s) return;
    for (size_t i = 0; i < s->n_on_success; i++) {
        free((char *)s->on_success[i].key);
        free((char *)s->on_success[i].value);
    }
    free(s->on_success);
    free(s);
    ctx->data = NULL;
}
