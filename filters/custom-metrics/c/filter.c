/*
 * custom-metrics: a request counter and a latency histogram, labelled from request and response
 * attributes chosen in the configuration (see ../schema.json).
 *
 * Labels are encoded in the metric name as Istio encodes istio_requests_total's:
 *     envoyext_requests_total.method=.=GET;.;response_code=.=200;.;
 * Envoy stores proxy-wasm metrics under its custom namespace "wasmcustom." and prints them at
 * /stats/prometheus without the namespace and without the envoy_ prefix; filter.yaml's stats_tags
 * cut every `name=.=value;.;` out of the name into a tag, so Prometheus sees
 * envoyext_requests_total{method="GET",response_code="200"}.
 *
 * Everything is recorded once per request when the response headers pass (the response code is
 * known then); the duration is the time from request headers to response headers.
 */
#include <stdio.h>
#include <string.h>

#include "proxy_wasm.h"

#define MAX_LABELS 10
#define MAX_LIST 100
#define MAX_VALUE 64
#define MAX_NAME 1024

typedef enum { F_METHOD, F_PATH_PREFIX, F_ROUTE, F_CODE, F_CODE_CLASS, F_HEADER, F_CLUSTER } source;

typedef struct {
    char *name;
    source from;
    char *header;
    char **list; /* header: allowed values; path_prefix: prefixes */
    size_t n_list;
    int depth;
} label;

typedef struct {
    char prefix[65];
    label labels[MAX_LABELS];
    size_t n_labels;
} config;

typedef struct {
    uint64_t start_ns;
    char *values[MAX_LABELS]; /* request-side label values, taken while the request headers pass */
} stream;

/* ---- metric ids by name ----------------------------------------------------------------------
 * Defining a metric is a host call and a stat-name lookup; a small per-VM cache makes the common
 * case one hash probe. It is bounded: past CACHE_SIZE distinct names the host is asked every time
 * (correct, only slower), so high-cardinality labels cannot grow this VM's memory. */
#define CACHE_SIZE 512
static struct { char *name; uint32_t id; } cache[CACHE_SIZE];

static uint32_t hash(const char *s) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static bool metric_id(pw_metric_type type, const char *name, uint32_t *id) {
    uint32_t h = hash(name) % CACHE_SIZE;
    for (uint32_t i = 0; i < 8; i++) { /* short linear probe */
        uint32_t slot = (h + i) % CACHE_SIZE;
        if (cache[slot].name == NULL) {
            if (pw_define_metric(type, name, id) != PW_OK) return false;
            cache[slot].name = strdup(name);
            if (cache[slot].name) cache[slot].id = *id;
            return true;
        }
        if (strcmp(cache[slot].name, name) == 0) {
            *id = cache[slot].id;
            return true;
        }
    }
    return pw_define_metric(type, name, id) == PW_OK;
}

/* ---- configuration --------------------------------------------------------------------------- */

static void free_config(config *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_labels; i++) {
        free(c->labels[i].name);
        free(c->labels[i].header);
        for (size_t j = 0; j < c->labels[i].n_list; j++) free(c->labels[i].list[j]);
        free(c->labels[i].list);
    }
    free(c);
}

static bool parse_source(pw_json v, source *out) {
    static const char *names[] = {"method", "path_prefix", "route", "response_code",
                                  "response_code_class", "header", "upstream_cluster"};
    for (int i = 0; i < 7; i++)
        if (pw_json_streq(v, names[i])) { *out = (source)i; return true; }
    return false;
}

static bool parse_list(pw_json obj, const char *key, label *l) {
    pw_json arr, item;
    if (!pw_json_get(obj, key, &arr)) return true;
    size_t n = pw_json_count(arr);
    if (pw_json_typeof(arr) != PW_JSON_ARRAY || n > MAX_LIST) return false;
    l->list = calloc(n ? n : 1, sizeof(char *));
    if (!l->list) return false;
    for (size_t i = 0; i < n; i++) {
        if (!pw_json_index(arr, i, &item) || !(l->list[i] = pw_json_strdup(item))) return false;
        l->n_list++;
    }
    return true;
}

/* The schema has been checked by `envoyext test`; this re-checks what the code relies on, because
 * a mesh may hand the plugin any bytes. Returning false makes Envoy reject the configuration. */
static config *parse_config(const char *text, size_t len) {
    pw_json root, labels, item, v;
    config *c = calloc(1, sizeof(config));
    if (!c) return NULL;
    strcpy(c->prefix, "envoyext");
    if (len == 0) return c;
    if (!pw_json_parse(text, len, &root) || pw_json_typeof(root) != PW_JSON_OBJECT) goto bad;
    if (pw_json_get(root, "prefix", &v) && !pw_json_string(v, c->prefix, sizeof c->prefix, NULL)) goto bad;
    if (!pw_json_get(root, "labels", &labels)) return c;
    if (pw_json_typeof(labels) != PW_JSON_ARRAY || pw_json_count(labels) > MAX_LABELS) goto bad;
    for (size_t i = 0; pw_json_index(labels, i, &item); i++) {
        label *l = &c->labels[c->n_labels];
        int64_t depth = 1;
        if (!pw_json_get(item, "from", &v) || !parse_source(v, &l->from)) goto bad;
        l->name = pw_json_get_string(item, "name");
        if (!l->name) goto bad;
        c->n_labels++;
        for (size_t j = 0; j + 1 < c->n_labels; j++) {
            if (strcmp(c->labels[j].name, l->name) == 0) {
                pw_logf(PW_LOG_ERROR, "custom-metrics: label '%s' is listed twice", l->name);
                goto bad;
            }
        }
        if (l->from == F_HEADER && !(l->header = pw_json_get_string(item, "header"))) goto bad;
        if (!parse_list(item, l->from == F_HEADER ? "values" : "prefixes", l)) goto bad;
        pw_json_get_int(item, "depth", &depth);
        l->depth = depth < 1 ? 1 : depth > 5 ? 5 : (int)depth;
    }
    return c;
bad:
    free_config(c);
    return NULL;
}

bool pw_on_configure(pw_root *root, const char *text, size_t len) {
    config *c = parse_config(text, len);
    if (!c) {
        pw_log(PW_LOG_ERROR, "custom-metrics: invalid configuration (see schema.json)");
        return false;
    }
    free_config(root->data);
    root->data = c;
    return true;
}

void pw_on_root_delete(pw_root *root) { free_config(root->data); }

/* ---- label values ---------------------------------------------------------------------------- */

/* A label value goes into a stat name: keep it to characters that cannot break the
 * `name=.=value;.;` encoding or Envoy's dot-separated names, and bounded in length. */
static char *clean(const char *v) {
    size_t n = strlen(v) < MAX_VALUE ? strlen(v) : MAX_VALUE;
    char *out = malloc(n + 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  strchr("_-/:@+", ch) != NULL;
        out[i] = ok ? ch : '_';
    }
    out[n] = 0;
    return out;
}

static const char *METHODS[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};

static char *method_value(void) {
    char *m = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, ":method");
    for (size_t i = 0; m && i < sizeof METHODS / sizeof *METHODS; i++)
        if (strcmp(m, METHODS[i]) == 0) return m;
    free(m);
    return strdup("OTHER");
}

static char *path_prefix_value(const label *l) {
    char *path = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, ":path");
    if (!path) return strdup("/");
    path[strcspn(path, "?#")] = 0;
    char *out = NULL;
    if (l->list) {
        for (size_t i = 0; i < l->n_list && !out; i++)
            if (strncmp(path, l->list[i], strlen(l->list[i])) == 0) out = strdup(l->list[i]);
        if (!out) out = strdup("other");
    } else {
        /* The first `depth` segments: "/api/users/7" with depth 1 is "/api". */
        size_t end = 0;
        for (int seg = 0; seg < l->depth && path[end] == '/' && path[end + 1] && path[end + 1] != '/'; seg++) {
            end++;
            while (path[end] && path[end] != '/') end++;
        }
        path[end] = 0;
        out = strdup(end ? path : "/");
    }
    free(path);
    return out;
}

static char *header_value(const label *l) {
    char *v = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, l->header);
    if (!v) return strdup("unknown");
    if (!l->list) return v;
    for (size_t i = 0; i < l->n_list; i++)
        if (strcmp(v, l->list[i]) == 0) return v;
    free(v);
    return strdup("other");
}

static char *property_or_unknown(const char *dotted) {
    char *v = pw_get_property_str(dotted);
    if (v && *v) return v;
    free(v);
    return strdup("unknown");
}

/* Request-side values are read while the request headers pass: a filter earlier in the response
 * path may not see them the same way later, and the route may be cleared by then. */
static char *request_value(const label *l) {
    switch (l->from) {
    case F_METHOD: return method_value();
    case F_PATH_PREFIX: return path_prefix_value(l);
    case F_HEADER: return header_value(l);
    default: return NULL;
    }
}

static char *response_value(const label *l, const char *status) {
    char buf[8];
    switch (l->from) {
    case F_CODE: return strdup(status);
    case F_CODE_CLASS: snprintf(buf, sizeof buf, "%cxx", status[0]); return strdup(buf);
    case F_ROUTE: return property_or_unknown("xds.route_name");
    case F_CLUSTER: return property_or_unknown("xds.cluster_name");
    default: return NULL;
    }
}

/* ---- the stream ------------------------------------------------------------------------------ */

static void free_stream(stream *s) {
    if (!s) return;
    for (size_t i = 0; i < MAX_LABELS; i++) free(s->values[i]);
    free(s);
}

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t n, bool eos) {
    config *c = ctx->root->data;
    stream *s = calloc(1, sizeof(stream));
    if (!c || !s) { free(s); return PW_CONTINUE; }
    s->start_ns = pw_now_ns();
    for (size_t i = 0; i < c->n_labels; i++) s->values[i] = request_value(&c->labels[i]);
    free_stream(ctx->data);
    ctx->data = s;
    return PW_CONTINUE;
}

static void append(char *buf, size_t *at, const char *s) {
    size_t n = strlen(s);
    if (*at + n < MAX_NAME) { memcpy(buf + *at, s, n); *at += n; buf[*at] = 0; }
}

pw_action pw_on_response_headers(pw_ctx *ctx, uint32_t n, bool eos) {
    config *c = ctx->root->data;
    stream *s = ctx->data;
    if (!c || !s || s->start_ns == 0) return PW_CONTINUE; /* no request seen, or already recorded */
    char *status = pw_get_header(PW_MAP_HTTP_RESPONSE_HEADERS, ":status");
    char tags[MAX_NAME] = "";
    size_t at = 0;
    for (size_t i = 0; i < c->n_labels; i++) {
        const label *l = &c->labels[i];
        char *raw = s->values[i] ? strdup(s->values[i]) : response_value(l, status ? status : "0");
        char *v = raw ? clean(raw) : NULL;
        append(tags, &at, i == 0 ? "." : "");
        append(tags, &at, l->name);
        append(tags, &at, "=.=");
        append(tags, &at, v ? v : "unknown");
        append(tags, &at, ";.;");
        free(raw);
        free(v);
    }
    free(status);

    char name[MAX_NAME + 128];
    uint32_t id;
    snprintf(name, sizeof name, "%s_requests_total%s", c->prefix, tags);
    if (metric_id(PW_METRIC_COUNTER, name, &id)) pw_increment_metric(id, 1);
    uint64_t now = pw_now_ns();
    snprintf(name, sizeof name, "%s_request_duration_milliseconds%s", c->prefix, tags);
    if (now >= s->start_ns && metric_id(PW_METRIC_HISTOGRAM, name, &id))
        pw_record_metric(id, (now - s->start_ns) / 1000000);
    s->start_ns = 0; /* once per request, even if the host calls again (e.g. 100-continue) */
    return PW_CONTINUE;
}

void pw_on_delete(pw_ctx *ctx) { free_stream(ctx->data); }
