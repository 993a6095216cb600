/*
 * istio.stats: envoyext's stand-in for Istio's stats filter. Per HTTP request it records
 *     istio_requests_total                 counter
 *     istio_request_duration_milliseconds  histogram (request start to end of stream)
 *     istio_request_bytes                  histogram (request.total_size: headers + body)
 *     istio_response_bytes                 histogram (response.total_size)
 * labelled with Istio's standard labels, in Istio's order. Labels are encoded in the stat name the
 * way Istio's Wasm stats filter encoded them, `name=.=value;.;`, and the bootstrap's
 * stats_config.stats_tags (envoyext/mesh/telemetry.py) cut each one out into a Prometheus label.
 *
 * Who the peer is. Istio exchanges workload metadata between the two proxies of a request (the
 * metadata-exchange filter; over plaintext HTTP it travels in request and response headers). This
 * filter does the same with one header, PEER_HEADER, holding `key=value;...` of the sending proxy:
 *   reporter=source (client sidecar, gateway): sets it on the request (replacing anything the app
 *     sent), reads and removes it from the response: the peer is the destination.
 *   reporter=destination (server sidecar): reads and removes it from the request (the peer is the
 *     source), sets it on the response.
 * When the response carries no peer header (a local reply, an upstream outside the mesh), the
 * destination workload falls back to the upstream host's metadata `istio.workload`
 * ("name;namespace;canonical service;canonical revision;cluster", Istio's EDS format), if any.
 * The destination service is Istio's: from the cluster name `outbound|port|subset|host` on the
 * source side, and from this workload's services by the local port on the destination side (what
 * Istio reads from the clusters' `istio.services` metadata); failing that, the host header, as
 * Istio falls back to it.
 * Principals come from the TLS peer certificates, so they are "unknown" on plaintext.
 *
 * Configuration (JSON; see telemetry.py stats_filter): {"reporter": "source"|"destination",
 * "workload", "namespace", "app", "version", "canonical_service", "canonical_revision", "cluster",
 * "services": [{"host", "name", "namespace", "ports": [target ports]}]}.
 */
#include <stdio.h>
#include <string.h>

#include "proxy_wasm.h"

#define PEER_HEADER "x-envoyext-peer-metadata"
#define MAX_VALUE 128
#define MAX_SERVICES 32
#define MAX_PORTS 16
#define NS_PER_MS 1000000

typedef enum { SOURCE, DESTINATION } reporter;

/* One workload's identity, as exchanged and as labelled. */
typedef struct {
    char workload[MAX_VALUE + 1], namespace[MAX_VALUE + 1], app[MAX_VALUE + 1], version[MAX_VALUE + 1];
    char canonical_service[MAX_VALUE + 1], canonical_revision[MAX_VALUE + 1], cluster[MAX_VALUE + 1];
} peer;

typedef struct {
    char *host, *name, *namespace;
    int64_t ports[MAX_PORTS];
    size_t n_ports;
} service;

typedef struct {
    reporter role;
    peer self;
    char *self_header; /* this proxy's identity as PEER_HEADER carries it */
    service services[MAX_SERVICES];
    size_t n_services;
} config;

typedef struct {
    uint64_t start_ns;
    bool grpc;
    bool have_peer;
    peer other; /* the source (destination reporter) or the destination (source reporter) */
} stream;

/* ---- values ---------------------------------------------------------------------------------
 * A label value goes into a stat name: keep it to characters that cannot break `=.=` / `;.;`
 * (no '=' or ';') and bounded. Dots stay: Istio's values (service hosts) have them, and the tag
 * extractor removes the whole `name=.=value;.;` from the name before Prometheus sees it. */
static void clean_into(char *out, const char *v) {
    size_t i = 0;
    for (; v && v[i] && i < MAX_VALUE; i++) {
        char ch = v[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  strchr("_-/:@+.", ch) != NULL;
        out[i] = ok ? ch : '_';
    }
    out[i] = 0;
    if (i == 0) strcpy(out, "unknown");
}

static void unknown_peer(peer *p) {
    clean_into(p->workload, NULL);
    clean_into(p->namespace, NULL);
    clean_into(p->app, NULL);
    clean_into(p->version, NULL);
    clean_into(p->canonical_service, NULL);
    clean_into(p->canonical_revision, NULL);
    clean_into(p->cluster, NULL);
}

/* The field of `p` a PEER_HEADER key names, or NULL. */
static char *peer_field(peer *p, const char *key, size_t n) {
    static const char *keys[] = {"workload", "namespace", "app", "version", "service", "revision", "cluster"};
    char *fields[] = {p->workload, p->namespace, p->app, p->version, p->canonical_service,
                      p->canonical_revision, p->cluster};
    for (int i = 0; i < 7; i++)
        if (strlen(keys[i]) == n && strncmp(keys[i], key, n) == 0) return fields[i];
    return NULL;
}

/* "workload=reviews-v1;namespace=default;..." -> p (absent keys stay "unknown"). */
static void parse_peer(const char *text, peer *p) {
    unknown_peer(p);
    while (text && *text) {
        const char *end = strchr(text, ';');
        size_t len = end ? (size_t)(end - text) : strlen(text);
        const char *eq = memchr(text, '=', len);
        if (eq) {
            char *field = peer_field(p, text, (size_t)(eq - text));
            size_t vlen = len - (size_t)(eq - text) - 1;
            if (field && vlen > 0) {
                char value[MAX_VALUE + 1];
                if (vlen > MAX_VALUE) vlen = MAX_VALUE;
                memcpy(value, eq + 1, vlen);
                value[vlen] = 0;
                clean_into(field, value);
            }
        }
        text = end ? end + 1 : NULL;
    }
}

static char *format_peer(const peer *p) {
    size_t n = strlen(p->workload) + strlen(p->namespace) + strlen(p->app) + strlen(p->version) +
               strlen(p->canonical_service) + strlen(p->canonical_revision) + strlen(p->cluster) + 80;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "workload=%s;namespace=%s;app=%s;version=%s;service=%s;revision=%s;cluster=%s",
                 p->workload, p->namespace, p->app, p->version, p->canonical_service, p->canonical_revision,
                 p->cluster);
    return out;
}

/* Istio's endpoint metadata `istio.workload`: "name;namespace;canonical service;revision;cluster". */
static bool peer_from_host_metadata(peer *p) {
    static const char *path[] = {"xds", "upstream_host_metadata", "filter_metadata", "istio", "workload"};
    char *v = NULL;
    size_t len = 0;
    if (pw_get_property(path, 5, &v, &len) != PW_OK || !v || !*v) {
        free(v);
        return false;
    }
    unknown_peer(p);
    char *fields[] = {p->workload, p->namespace, p->canonical_service, p->canonical_revision, p->cluster};
    char *at = v;
    for (int i = 0; i < 5 && at; i++) {
        char *end = strchr(at, ';');
        if (end) *end = 0;
        clean_into(fields[i], at);
        at = end ? end + 1 : NULL;
    }
    free(v);
    return true;
}

/* ---- configuration --------------------------------------------------------------------------- */

static void free_config(config *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_services; i++) {
        free(c->services[i].host);
        free(c->services[i].name);
        free(c->services[i].namespace);
    }
    free(c->self_header);
    free(c);
}

static void string_field(pw_json root, const char *key, char *out) {
    char *v = pw_json_get_string(root, key);
    clean_into(out, v);
    free(v);
}

static bool parse_services(pw_json root, config *c) {
    pw_json list, item, ports, port;
    if (!pw_json_get(root, "services", &list)) return true;
    if (pw_json_typeof(list) != PW_JSON_ARRAY || pw_json_count(list) > MAX_SERVICES) return false;
    for (size_t i = 0; pw_json_index(list, i, &item); i++) {
        service *s = &c->services[c->n_services++];
        s->host = pw_json_get_string(item, "host");
        s->name = pw_json_get_string(item, "name");
        s->namespace = pw_json_get_string(item, "namespace");
        if (!s->host || !s->name || !s->namespace) return false;
        if (pw_json_get(item, "ports", &ports)) {
            for (size_t j = 0; j < MAX_PORTS && pw_json_index(ports, j, &port); j++)
                if (pw_json_int(port, &s->ports[s->n_ports])) s->n_ports++;
        }
    }
    return true;
}

static config *parse_config(const char *text, size_t len) {
    pw_json root, v;
    config *c = calloc(1, sizeof(config));
    if (!c) return NULL;
    if (!pw_json_parse(text, len, &root) || pw_json_typeof(root) != PW_JSON_OBJECT) {
        pw_log(PW_LOG_ERROR, "istio.stats: the configuration is not a JSON object");
        goto bad;
    }
    if (!pw_json_get(root, "reporter", &v) || !(pw_json_streq(v, "source") || pw_json_streq(v, "destination"))) {
        pw_log(PW_LOG_ERROR, "istio.stats: reporter must be \"source\" or \"destination\"");
        goto bad;
    }
    c->role = pw_json_streq(v, "source") ? SOURCE : DESTINATION;
    string_field(root, "workload", c->self.workload);
    string_field(root, "namespace", c->self.namespace);
    string_field(root, "app", c->self.app);
    string_field(root, "version", c->self.version);
    string_field(root, "canonical_service", c->self.canonical_service);
    string_field(root, "canonical_revision", c->self.canonical_revision);
    string_field(root, "cluster", c->self.cluster);
    if (!parse_services(root, c)) {
        pw_logf(PW_LOG_ERROR, "istio.stats: services must be a list of at most %d {host, name, namespace, ports}",
                MAX_SERVICES);
        goto bad;
    }
    if (!(c->self_header = format_peer(&c->self))) goto bad;
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

/* ---- the stream ------------------------------------------------------------------------------ */

static stream *stream_of(pw_ctx *ctx) {
    if (!ctx->data) ctx->data = calloc(1, sizeof(stream));
    return ctx->data;
}

/* The peer header of `map`, parsed into s->other and removed so the app never sees it. */
static void take_peer(pw_map_type map, stream *s) {
    char *v = pw_get_header(map, PEER_HEADER);
    if (v) {
        parse_peer(v, &s->other);
        s->have_peer = true;
        pw_remove_header(map, PEER_HEADER);
        free(v);
    }
}

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t n, bool eos) {
    config *c = ctx->root->data;
    stream *s = stream_of(ctx);
    if (!c || !s) return PW_CONTINUE;
    s->start_ns = pw_now_ns();
    char *ct = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, "content-type");
    s->grpc = ct && strncmp(ct, "application/grpc", 16) == 0;
    free(ct);
    if (c->role == DESTINATION)
        take_peer(PW_MAP_HTTP_REQUEST_HEADERS, s);
    else
        pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, PEER_HEADER, c->self_header);
    return PW_CONTINUE;
}

pw_action pw_on_response_headers(pw_ctx *ctx, uint32_t n, bool eos) {
    config *c = ctx->root->data;
    stream *s = stream_of(ctx);
    if (!c || !s) return PW_CONTINUE;
    if (c->role == SOURCE)
        take_peer(PW_MAP_HTTP_RESPONSE_HEADERS, s);
    else
        pw_replace_header(PW_MAP_HTTP_RESPONSE_HEADERS, PEER_HEADER, c->self_header);
    return PW_CONTINUE;
}

/* ---- labels ---------------------------------------------------------------------------------- */

static void property_into(const char *dotted, char *out) {
    char *v = pw_get_property_str(dotted);
    clean_into(out, v);
    free(v);
}

static int64_t property_int(const char *dotted, int64_t otherwise) {
    int64_t v;
    return pw_get_property_int(dotted, &v) == PW_OK ? v : otherwise;
}

/* Envoy's response flags (the bits of `response.flags`, CoreResponseFlag order) in the short
 * form %RESPONSE_FLAGS% prints, comma-joined; "-" for none. */
static const char *FLAGS[] = {"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
                              "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM",
                              "DF", "DO", "DR", "UDO"};

static void response_flags(char *out) {
    uint64_t bits = (uint64_t)property_int("response.flags", 0);
    size_t at = 0;
    out[0] = 0;
    for (size_t i = 0; i < sizeof FLAGS / sizeof *FLAGS; i++) {
        if (!(bits & (1ull << i))) continue;
        size_t n = strlen(FLAGS[i]);
        if (at + n + 2 > MAX_VALUE) break;
        if (at) out[at++] = ',';
        memcpy(out + at, FLAGS[i], n + 1);
        at += n;
    }
    if (!at) strcpy(out, "-");
}

typedef struct {
    char host[MAX_VALUE + 1], name[MAX_VALUE + 1], namespace[MAX_VALUE + 1];
} service_labels;

/* Source side: the host of `outbound|9080|v1|reviews.default.svc.cluster.local`; a Kubernetes
 * service's name and namespace are its first two labels. */
static void service_from_cluster(service_labels *out) {
    char *cluster = pw_get_property_str("xds.cluster_name");
    char *host = NULL;
    if (cluster && strncmp(cluster, "outbound|", 9) == 0) {
        host = cluster;
        for (int bars = 0; bars < 3 && host; bars++) host = strchr(host, '|') ? strchr(host, '|') + 1 : NULL;
    }
    clean_into(out->host, host);
    clean_into(out->name, NULL);
    clean_into(out->namespace, NULL);
    if (host && *host) {
        char *svc = strstr(host, ".svc.");
        char *dot = strchr(host, '.');
        if (svc && dot && dot < svc) {
            *dot = 0;
            *svc = 0;
            clean_into(out->name, host);
            clean_into(out->namespace, dot + 1);
        } else {
            clean_into(out->name, host);
        }
    }
    free(cluster);
}

/* Destination side: the service of this workload whose target port the request arrived on. */
static void service_from_port(const config *c, service_labels *out) {
    int64_t port = property_int("destination.port", -1);
    const service *found = NULL;
    for (size_t i = 0; i < c->n_services && !found; i++)
        for (size_t j = 0; j < c->services[i].n_ports; j++)
            if (c->services[i].ports[j] == port) { found = &c->services[i]; break; }
    clean_into(out->host, found ? found->host : NULL);
    clean_into(out->name, found ? found->name : NULL);
    clean_into(out->namespace, found ? found->namespace : NULL);
}

/* Istio's fallback when the cluster names no service: the request's host header, as is, for
 * both the service and its name, and the destination workload's namespace. */
static void service_from_host(service_labels *out, const peer *dst) {
    if (strcmp(out->host, "unknown") != 0) return;
    property_into("request.host", out->host);
    strcpy(out->name, out->host);
    strcpy(out->namespace, dst->namespace);
}

#define N_LABELS 25

/* The labels in Istio's order (istio/proxy testdata/metric/client_request_total.yaml.tmpl). */
static char *label_suffix(const config *c, stream *s) {
    static const char *names[N_LABELS] = {
        "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
        "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
        "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
        "destination_version", "destination_service", "destination_canonical_service",
        "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
        "destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
        "connection_security_policy"};
    static char src_principal[MAX_VALUE + 1], dst_principal[MAX_VALUE + 1], code[16], grpc[16],
        flags[MAX_VALUE + 1];
    service_labels svc;
    if (!s->have_peer && !(c->role == SOURCE && peer_from_host_metadata(&s->other))) unknown_peer(&s->other);
    const peer *src = c->role == SOURCE ? &c->self : &s->other;
    const peer *dst = c->role == SOURCE ? &s->other : &c->self;
    if (c->role == SOURCE) {
        property_into("upstream.uri_san_local_certificate", src_principal);
        property_into("upstream.uri_san_peer_certificate", dst_principal);
        service_from_cluster(&svc);
    } else {
        property_into("connection.uri_san_peer_certificate", src_principal);
        property_into("connection.uri_san_local_certificate", dst_principal);
        service_from_port(c, &svc);
    }
    service_from_host(&svc, dst);
    snprintf(code, sizeof code, "%lld", (long long)property_int("response.code", 0));
    grpc[0] = 0;
    if (s->grpc) {
        int64_t g = property_int("response.grpc_status", -1);
        if (g >= 0) snprintf(grpc, sizeof grpc, "%lld", (long long)g);
    }
    response_flags(flags);
    const char *policy = "unknown";
    if (c->role == DESTINATION) {
        char *mtls = NULL;
        size_t len = 0;
        static const char *path[] = {"connection", "mtls"};
        bool on = pw_get_property(path, 2, &mtls, &len) == PW_OK && len == 1 && mtls[0];
        free(mtls);
        policy = on ? "mutual_tls" : "none";
    }
    const char *values[N_LABELS] = {
        c->role == SOURCE ? "source" : "destination", src->workload, src->canonical_service, src->canonical_revision,
        src->namespace, src_principal, src->app, src->version, src->cluster,
        dst->workload, dst->namespace, dst_principal, dst->app, dst->version, svc.host, dst->canonical_service,
        dst->canonical_revision, svc.name, svc.namespace, dst->cluster,
        s->grpc ? "grpc" : "http", code, grpc, flags, policy};
    size_t total = 2;
    for (int i = 0; i < N_LABELS; i++) total += strlen(names[i]) + strlen(values[i]) + 6;
    char *out = malloc(total), *at = out;
    if (!out) return NULL;
    *at++ = '.';
    for (int i = 0; i < N_LABELS; i++) at += sprintf(at, "%s=.=%s;.;", names[i], values[i]);
    return out;
}

/* ---- recording ------------------------------------------------------------------------------- */

static void record(const char *metric, const char *suffix, pw_metric_type type, uint64_t value) {
    size_t n = strlen(metric) + strlen(suffix) + 1;
    char *name = malloc(n);
    uint32_t id;
    if (!name) return;
    snprintf(name, n, "%s%s", metric, suffix);
    /* Envoy returns the same id for a name it already knows: no cache needed for correctness. */
    if (pw_define_metric(type, name, &id) == PW_OK) {
        if (type == PW_METRIC_COUNTER) pw_increment_metric(id, (int64_t)value);
        else pw_record_metric(id, value);
    }
    free(name);
}

/* Once per request, at the end of the stream (Istio reports in its log callback): the duration
 * and sizes are then final, and local replies are counted with their code and flags. */
void pw_on_log(pw_ctx *ctx) {
    config *c = ctx->root->data;
    stream *s = ctx->data;
    if (!c || !s || s->start_ns == 0) return;
    char *suffix = label_suffix(c, s);
    if (!suffix) return;
    int64_t duration_ns = property_int("request.duration", -1);
    if (duration_ns < 0) {
        uint64_t now = pw_now_ns();
        duration_ns = now >= s->start_ns ? (int64_t)(now - s->start_ns) : 0;
    }
    record("istio_requests_total", suffix, PW_METRIC_COUNTER, 1);
    record("istio_request_duration_milliseconds", suffix, PW_METRIC_HISTOGRAM, (uint64_t)duration_ns / NS_PER_MS);
    record("istio_request_bytes", suffix, PW_METRIC_HISTOGRAM, (uint64_t)property_int("request.total_size", 0));
    record("istio_response_bytes", suffix, PW_METRIC_HISTOGRAM, (uint64_t)property_int("response.total_size", 0));
    free(suffix);
    s->start_ns = 0;
}

void pw_on_delete(pw_ctx *ctx) { free(ctx->data); }
