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
#define MAX_PREFIX 64 /* schema: prefix maxLength */
#define MAX_DEPTH 5   /* schema: depth maximum */
#define NS_PER_MS 1000000

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
    char prefix[MAX_PREFIX + 1];
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

static bool valid_name(const char *s) { /* schema: ^[a-z_][a-z0-9_]*$ - it goes into a stat name */
    if (!s || !*s || (*s >= '0' && *s <= '9')) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
    return true;
}

/* One entry of `labels`; false with the reason logged (the entry's index in the message). */
static bool parse_label(pw_json item, size_t i, config *c) {
    label *l = &c->labels[i];
    pw_json v;
    int64_t depth = 1;
    l->name = pw_json_get_string(item, "name");
    if (!valid_name(l->name)) {
        pw_logf(PW_LOG_ERROR, "custom-metrics: labels[%zu].name must match ^[a-z_][a-z0-9_]*$", i);
        return false;
    }
    for (size_t j = 0; j < i; j++) {
        if (strcmp(c->labels[j].name, l->name) == 0) {
            pw_logf(PW_LOG_ERROR, "custom-metrics: labels[%zu].name '%s' is listed twice", i, l->name);
            return false;
        }
    }
    if (!pw_json_get(item, "from", &v) || !parse_source(v, &l->from)) {
        pw_logf(PW_LOG_ERROR, "custom-metrics: labels[%zu].from is missing or unknown", i);
        return false;
    }
    if (l->from == F_HEADER && !(l->header = pw_json_get_string(item, "header"))) {
        pw_logf(PW_LOG_ERROR, "custom-metrics: labels[%zu].header is required with from: header", i);
        return false;
    }
    const char *list_key = l->from == F_HEADER ? "values" : "prefixes";
    if (!parse_list(item, list_key, l)) {
        pw_logf(PW_LOG_ERROR, "custom-metrics: labels[%zu].%s must be a list of at most %d strings", i, list_key,
                MAX_LIST);
        return false;
    }
    if (pw_json_get(item, "depth", &v) && (!pw_json_int(v, &depth) || depth < 1 || depth > MAX_DEPTH)) {
        pw_logf(PW_LOG_ERROR, "custom-metrics: labels[%zu].depth must be 1-%d", i, MAX_DEPTH);
        return false;
    }
    l->depth = (int)depth;
    return true;
}

/* The schema has been checked by `envoyext test`; this re-checks what the code relies on, because
 * a mesh may hand the plugin any bytes. NULL (reason logged) makes Envoy reject the configuration. */
static config *parse_config(const char *text, size_t len) {
    pw_json root, labels, item, v;
    config *c = calloc(1, sizeof(config));
    if (!c) return NULL;
    strcpy(c->prefix, "envoyext");
    if (len == 0) return c;
    if (!pw_json_parse(text, len, &root) || pw_json_typeof(root) != PW_JSON_OBJECT) {
        pw_log(PW_LOG_ERROR, "custom-metrics: the configuration is not a JSON object");
        goto bad;
    }
    if (pw_json_get(root, "prefix", &v) &&
        (!pw_json_string(v, c->prefix, sizeof c->prefix, NULL) || !valid_name(c->prefix))) {
        pw_log(PW_LOG_ERROR, "custom-metrics: prefix must match ^[a-z_][a-z0-9_]*$, at most 64 characters");
        goto bad;
    }
    if (!pw_json_get(root, "labels", &labels)) return c;
    if (pw_json_typeof(labels) != PW_JSON_ARRAY || pw_json_count(labels) > MAX_LABELS) {
        pw_logf(PW_LOG_ERROR, "custom-metrics: labels must be a list of at most %d labels", MAX_LABELS);
        goto bad;
    }
    for (size_t i = 0; pw_json_index(labels, i, &item); i++) {
        c->n_labels = i + 1; /* so free_config frees what parse_label allocated */
        if (!parse_label(item, i, c)) goto bad;
    }
    return c;
bad:
    free_config(c);
    return NULL;
}

bool pw_on_configure(pw_root *root, const char *text, size_t len) {
    config *c = parse_config(text, len);
    if (!c) return false;
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

/* The labels as `.name=.=value;.;name=.=value;.;` (empty without labels), malloc'd. Values are
 * cleaned here, so the whole suffix is built once per request at its exact size. */
static char *label_suffix(const config *c, const stream *s, const char *status) {
    char *values[MAX_LABELS] = {0};
    size_t total = 1; /* the leading '.', or the NUL */
    for (size_t i = 0; i < c->n_labels; i++) {
        const label *l = &c->labels[i];
        char *raw = s->values[i] ? NULL : response_value(l, status);
        values[i] = clean(s->values[i] ? s->values[i] : raw ? raw : "unknown");
        free(raw);
        if (!values[i]) goto fail;
        total += strlen(l->name) + strlen("=.=") + strlen(values[i]) + strlen(";.;");
    }
    char *out = malloc(total + 1), *at = out;
    if (!out) goto fail;
    *at = 0;
    for (size_t i = 0; i < c->n_labels; i++)
        at += sprintf(at, "%s%s=.=%s;.;", i == 0 ? "." : "", c->labels[i].name, values[i]);
    for (size_t i = 0; i < c->n_labels; i++) free(values[i]);
    return out;
fail:
    for (size_t i = 0; i < c->n_labels; i++) free(values[i]);
    return NULL;
}

static void record(const char *prefix, const char *metric, const char *suffix, pw_metric_type type,
                   uint64_t value) {
    size_t n = strlen(prefix) + strlen(metric) + strlen(suffix) + 1;
    char *name = malloc(n);
    uint32_t id;
    if (!name) return;
    snprintf(name, n, "%s%s%s", prefix, metric, suffix);
    if (metric_id(type, name, &id)) {
        if (type == PW_METRIC_COUNTER) pw_increment_metric(id, (int64_t)value);
        else pw_record_metric(id, value);
    }
    free(name);
}

pw_action pw_on_response_headers(pw_ctx *ctx, uint32_t n, bool eos) {
    config *c = ctx->root->data;
    stream *s = ctx->data;
    if (!c || !s || s->start_ns == 0) return PW_CONTINUE; /* no request seen, or already recorded */
    char *status = pw_get_header(PW_MAP_HTTP_RESPONSE_HEADERS, ":status");
    char *suffix = label_suffix(c, s, status ? status : "0");
    free(status);
    if (suffix) {
        uint64_t now = pw_now_ns();
        record(c->prefix, "_requests_total", suffix, PW_METRIC_COUNTER, 1);
        if (now >= s->start_ns)
            record(c->prefix, "_request_duration_milliseconds", suffix, PW_METRIC_HISTOGRAM,
                   (now - s->start_ns) / NS_PER_MS);
        free(suffix);
    }
    s->start_ns = 0; /* once per request, even if the host calls again (e.g. 100-continue) */
    return PW_CONTINUE;
}

void pw_on_delete(pw_ctx *ctx) { free_stream(ctx->data); }
