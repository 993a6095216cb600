/* cors: Cross-Origin Resource Sharing, as Envoy's envoy.filters.http.cors with one CorsPolicy
 * and Istio's VirtualService corsPolicy. Configuration: ../schema.json.
 *
 * A preflight (OPTIONS with Origin and Access-Control-Request-Method) from an allowed origin
 * is answered here with 200; other requests from an allowed origin go upstream and get
 * access-control-allow-origin (the request's origin, echoed), -allow-credentials and
 * -expose-headers on the way back. A request from any other origin gets no CORS headers. */
#include <stdio.h>
#include <string.h>

#include "proxy_wasm.h"

typedef struct {
    pw_string_matcher *origins; /* Envoy's StringMatcher, linear-time regex (pw_match.h) */
    size_t n_origins;
    char *methods, *headers, *expose, *max_age; /* "" when not configured */
    bool credentials, private_network, forward;
    uint32_t origin_valid, origin_invalid; /* metric ids */
} config;

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */

/* A header value: a string as is, a list of strings joined with ','; "" when absent. NULL (the
 * field named in the log) for anything else: a typo must not silently drop the header. */
static char *list_value(pw_json cfg, const char *key) {
    pw_json v, item;
    if (!pw_json_get(cfg, key, &v)) return strdup("");
    if (pw_json_typeof(v) == PW_JSON_STRING) return pw_json_strdup(v);
    bool ok = pw_json_typeof(v) == PW_JSON_ARRAY;
    size_t n = pw_json_count(v), total = 1;
    for (size_t i = 0; ok && i < n; i++) {
        size_t len = 0;
        ok = pw_json_index(v, i, &item) && pw_json_typeof(item) == PW_JSON_STRING;
        if (ok) pw_json_string(item, NULL, 0, &len);
        total += len + 1;
    }
    if (!ok) {
        pw_logf(PW_LOG_ERROR, "cors: %s must be a string or a list of strings", key);
        return NULL;
    }
    char *out = calloc(1, total), *p = out;
    for (size_t i = 0; out && i < n; i++) {
        size_t len = 0;
        pw_json_index(v, i, &item);
        if (i) *p++ = ',';
        pw_json_string(item, p, total - (size_t)(p - out), &len);
        p += len;
    }
    return out;
}

static void free_config(config *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_origins; i++) pw_string_matcher_free(&c->origins[i]);
    free(c->origins);
    free(c->methods);
    free(c->headers);
    free(c->expose);
    free(c->max_age);
    free(c);
}

bool pw_on_configure(pw_root *root, const char *json, size_t len) {
    pw_json cfg, list, item, age;
    config *c = calloc(1, sizeof *c);
    if (!c || !pw_json_parse(json, len, &cfg) || !pw_json_get(cfg, "allow_origins", &list)) goto bad;
    c->n_origins = pw_json_count(list);
    c->origins = calloc(c->n_origins ? c->n_origins : 1, sizeof *c->origins);
    if (!c->origins) goto bad;
    for (size_t i = 0; i < c->n_origins; i++) {
        char field[48];
        snprintf(field, sizeof field, "cors: allow_origins[%zu]", i);
        if (!pw_json_index(list, i, &item)) goto bad;
        if (!pw_json_string_matcher(item, field, &c->origins[i])) goto refuse; /* it logged why */
    }
    c->methods = list_value(cfg, "allow_methods");
    c->headers = list_value(cfg, "allow_headers");
    c->expose = list_value(cfg, "expose_headers");
    int64_t secs;
    if (pw_json_get_int(cfg, "max_age", &secs)) {
        c->max_age = malloc(24);
        if (c->max_age) snprintf(c->max_age, 24, "%lld", (long long)secs);
    } else {
        c->max_age = pw_json_get(cfg, "max_age", &age) ? pw_json_strdup(age) : strdup("");
    }
    c->forward = true; /* Envoy's default: preflights that are not ours go upstream */
    pw_json_get_bool(cfg, "allow_credentials", &c->credentials);
    pw_json_get_bool(cfg, "allow_private_network_access", &c->private_network);
    pw_json_get_bool(cfg, "forward_not_matching_preflights", &c->forward);
    if (!c->methods || !c->headers || !c->expose || !c->max_age) goto bad;
    /* Named as Envoy's own cors stats (http.<prefix>.cors.*), in the Wasm stats namespace. */
    pw_define_metric(PW_METRIC_COUNTER, "cors.origin_valid", &c->origin_valid);
    pw_define_metric(PW_METRIC_COUNTER, "cors.origin_invalid", &c->origin_invalid);
    free_config(root->data);
    root->data = c;
    return true;
bad:
    pw_log(PW_LOG_ERROR, "cors: invalid configuration (see schema.json)");
refuse: /* the last error line is the one Envoy's rejection shows: the cause, not a summary */
    free_config(c);
    return false;
}

void pw_on_root_delete(pw_root *root) { free_config(root->data); }

/* ------------------------------------------------------------------------ */
/* Origins                                                                   */

/* Envoy asks each matcher about "*" first: a policy allowing "*" allows every origin. */
static bool origin_allowed(const config *c, const char *origin) {
    for (size_t i = 0; i < c->n_origins; i++)
        if (pw_string_matcher_matches(&c->origins[i], "*", 1) ||
            pw_string_matcher_matches(&c->origins[i], origin, strlen(origin)))
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* The stream. ctx->data: the allowed origin to echo on the response, or NULL. */

static pw_action answer_preflight(config *c, const char *origin, bool allowed, const char *method) {
    pw_header h[8];
    size_t n = 0;
    char *req_headers = NULL, *pna = NULL;
    if (allowed) {
        h[n++] = (pw_header)PW_HEADER("access-control-allow-origin", origin);
        if (*c->expose) h[n++] = (pw_header)PW_HEADER("access-control-expose-headers", c->expose);
    }
    if (c->credentials) h[n++] = (pw_header)PW_HEADER("access-control-allow-credentials", "true");
    if (*c->methods)
        h[n++] = (pw_header)PW_HEADER("access-control-allow-methods", strcmp(c->methods, "*") ? c->methods : method);
    if (*c->headers) {
        if (strcmp(c->headers, "*") == 0) {
            req_headers = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, "access-control-request-headers");
            h[n++] = (pw_header)PW_HEADER("access-control-allow-headers", req_headers ? req_headers : "");
        } else {
            h[n++] = (pw_header)PW_HEADER("access-control-allow-headers", c->headers);
        }
    }
    if (*c->max_age) h[n++] = (pw_header)PW_HEADER("access-control-max-age", c->max_age);
    if (c->private_network) {
        pna = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, "access-control-request-private-network");
        if (pna && strcmp(pna, "true") == 0)
            h[n++] = (pw_header)PW_HEADER("access-control-allow-private-network", "true");
    }
    pw_send_local_response(200, "cors_response", "", 0, h, n, PW_GRPC_STATUS_NONE);
    free(req_headers);
    free(pna);
    return PW_PAUSE;
}

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    config *c = ctx->root->data;
    pw_action action = PW_CONTINUE;
    char *origin = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, "origin");
    char *method = NULL, *verb = NULL;
    if (!origin || !*origin) goto done;

    bool allowed = origin_allowed(c, origin);
    pw_increment_metric(allowed ? c->origin_valid : c->origin_invalid, 1);

    /* Access-Control-Request-Method matters only to a preflight: not read for other requests. */
    verb = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, ":method");
    if (verb && strcmp(verb, "OPTIONS") == 0)
        method = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, "access-control-request-method");
    bool preflight = method && *method;
    if (allowed) {
        ctx->data = origin; /* echoed on the response, freed in pw_on_delete */
        origin = NULL;
    }
    /* A preflight that is not ours to answer goes upstream, like any actual request. */
    if (preflight && (allowed || !c->forward))
        action = answer_preflight(c, ctx->data ? ctx->data : "", allowed, method);
done:
    free(origin);
    free(method);
    free(verb);
    return action;
}

pw_action pw_on_response_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    config *c = ctx->root->data;
    if (!ctx->data) return PW_CONTINUE;
    pw_replace_header(PW_MAP_HTTP_RESPONSE_HEADERS, "access-control-allow-origin", ctx->data);
    if (c->credentials) pw_replace_header(PW_MAP_HTTP_RESPONSE_HEADERS, "access-control-allow-credentials", "true");
    if (*c->expose) pw_replace_header(PW_MAP_HTTP_RESPONSE_HEADERS, "access-control-expose-headers", c->expose);
    return PW_CONTINUE;
}

void pw_on_delete(pw_ctx *ctx) { free(ctx->data); }
