/*
 * ratelimit: token buckets in the shape of Envoy's local_ratelimit filter (see ../schema.json).
 *
 * A request becomes descriptors through `rate_limits` (a header's value, the client address, a
 * fixed key); each descriptor that matches a configured one takes a token from that bucket, and
 * the default bucket is used when none matched (or always, by default). Out of tokens: 429.
 *
 * SHARING: every Envoy worker runs its own copy of this VM, so the buckets live in proxy-wasm
 * shared data, which all VMs with the same vm_id in the process see. A bucket is one 8-byte value
 * updated with compare-and-swap: read it with its CAS version, compute, write back only if nobody
 * wrote in between, else retry. Two workers never spend the same token.
 *
 * Buckets refill continuously like Envoy's (AtomicTokenBucket): tokens_per_fill per fill_interval,
 * never above max_tokens. The stored value is the time (ns) at which the bucket was (or would
 * have been) empty: tokens(now) = min(max, (now - empty_at) / T), T = ns per token. Taking a
 * token is empty_at += T, so a bucket is a single number and a CAS covers the whole update.
 */
#include <stdio.h>
#include <string.h>

#include "proxy_wasm.h"

#define MAX_RATE_LIMITS 16
#define MAX_ACTIONS 8
#define MAX_DESCRIPTORS 64
#define MAX_ENTRIES 8
#define CAS_RETRIES 32
#define MAX_FILL_SECONDS 999999 /* schema: up to six digits of seconds */
#define MIN_FILL_NS 50000000 /* Envoy refuses fill intervals under 50 ms */
#define BODY "local_rate_limited"

typedef struct {
    int64_t max;
    int64_t ns_per_token;
    double rate; /* tokens per second, to order buckets as Envoy does */
} bucket_spec;

typedef enum { A_HEADER, A_REMOTE_ADDRESS, A_GENERIC } action_kind;

typedef struct {
    action_kind kind;
    char *key;    /* descriptor key */
    char *header; /* A_HEADER */
    char *value;  /* A_GENERIC */
    bool skip_if_absent;
} action;

typedef struct {
    action actions[MAX_ACTIONS];
    size_t n;
} rate_limit;

typedef struct {
    char *keys[MAX_ENTRIES];
    char *values[MAX_ENTRIES]; /* NULL: any value, one bucket per distinct value */
    size_t n;
    bool dynamic;
    bucket_spec bucket;
} descriptor;

typedef struct {
    bucket_spec bucket; /* the default one */
    rate_limit rate_limits[MAX_RATE_LIMITS];
    size_t n_rate_limits;
    descriptor descriptors[MAX_DESCRIPTORS];
    size_t n_descriptors;
    bool always_default;
    bool headers;
    int64_t max_dynamic;
    char key_prefix[64]; /* shared-data namespace of this plugin and configuration */
} config;

typedef struct {
    bool report;  /* add x-ratelimit-* to the response */
    bool limited; /* our own 429: it carries its headers already */
    int64_t limit, remaining, reset;
} stream;

/* ---- configuration --------------------------------------------------------------------------- */

static void free_config(config *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_rate_limits; i++)
        for (size_t j = 0; j < c->rate_limits[i].n; j++) {
            action *a = &c->rate_limits[i].actions[j];
            free(a->key); free(a->header); free(a->value);
        }
    for (size_t i = 0; i < c->n_descriptors; i++)
        for (size_t j = 0; j < c->descriptors[i].n; j++) {
            free(c->descriptors[i].keys[j]); free(c->descriptors[i].values[j]);
        }
    free(c);
}

/* "60s", "0.5s" (a protobuf Duration in JSON) -> ns. */
static bool parse_duration(const char *s, int64_t *ns) {
    int64_t whole = 0, frac = 0, scale = 1000000000;
    if (!s || !*s) return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        whole = whole * 10 + (*s - '0');
        if (whole > MAX_FILL_SECONDS) return false; /* checked per digit: no signed overflow */
    }
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9' && scale > 1; s++) { scale /= 10; frac += (*s - '0') * scale; }
    if (strcmp(s, "s") != 0) return false;
    *ns = whole * 1000000000 + frac;
    return true;
}

static bool parse_bucket(pw_json obj, bucket_spec *b) {
    int64_t per_fill = 1, interval = 0;
    char *fill = pw_json_get_string(obj, "fill_interval");
    bool ok = parse_duration(fill, &interval);
    free(fill);
    b->max = 0;
    pw_json_get_int(obj, "max_tokens", &b->max);
    pw_json_get_int(obj, "tokens_per_fill", &per_fill);
    if (!ok || interval < MIN_FILL_NS || b->max < 1 || per_fill < 1) return false;
    b->ns_per_token = interval / per_fill;
    if (b->ns_per_token < 1) b->ns_per_token = 1;
    b->rate = (double)per_fill * 1e9 / (double)interval;
    return true;
}

static bool parse_action(pw_json obj, action *a) {
    pw_json v;
    if (pw_json_get(obj, "request_headers", &v)) {
        a->kind = A_HEADER;
        a->header = pw_json_get_string(v, "header_name");
        a->key = pw_json_get_string(v, "descriptor_key");
        pw_json_get_bool(v, "skip_if_absent", &a->skip_if_absent);
        return a->header && a->key;
    }
    if (pw_json_get(obj, "remote_address", &v)) {
        a->kind = A_REMOTE_ADDRESS;
        return (a->key = strdup("remote_address")) != NULL;
    }
    if (pw_json_get(obj, "generic_key", &v)) {
        a->kind = A_GENERIC;
        a->value = pw_json_get_string(v, "descriptor_value");
        a->key = pw_json_get_string(v, "descriptor_key");
        if (!a->key) a->key = strdup("generic_key");
        return a->value && a->key;
    }
    return false;
}

static uint64_t fnv64(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}
#define FNV64_INIT 14695981039346656037ull

/* The schema has been checked by `envoyext test`; this re-checks what the code relies on, because
 * a mesh may hand the plugin any bytes. Returning false makes Envoy reject the configuration. */
static config *parse_config(const char *text, size_t len) {
    pw_json root, v, arr, item, entries, entry;
    const char *why = "the configuration is not a JSON object";
    config *c = calloc(1, sizeof(config));
    if (!c) return NULL;
    c->always_default = true;
    c->headers = true;
    c->max_dynamic = 1000;
    if (!pw_json_parse(text, len, &root) || pw_json_typeof(root) != PW_JSON_OBJECT) goto bad;
    if (!pw_json_get(root, "token_bucket", &v) || !parse_bucket(v, &c->bucket)) {
        why = "token_bucket needs max_tokens >= 1, tokens_per_fill >= 1 and fill_interval >= 0.05s";
        goto bad;
    }
    pw_json_get_bool(root, "always_consume_default_token_bucket", &c->always_default);
    pw_json_get_int(root, "max_dynamic_descriptors", &c->max_dynamic);
    if (c->max_dynamic < 1) {
        why = "max_dynamic_descriptors must be at least 1";
        goto bad;
    }
    if (pw_json_get(root, "enable_x_ratelimit_headers", &v)) c->headers = !pw_json_streq(v, "OFF");

    if (pw_json_get(root, "rate_limits", &arr)) {
        why = "rate_limits: at most 16 entries, each with 1-8 actions of request_headers "
              "{header_name, descriptor_key}, remote_address or generic_key {descriptor_value}";
        if (pw_json_count(arr) > MAX_RATE_LIMITS) goto bad;
        for (size_t i = 0; pw_json_index(arr, i, &item); i++) {
            rate_limit *rl = &c->rate_limits[c->n_rate_limits++];
            pw_json actions, a;
            if (!pw_json_get(item, "actions", &actions) || pw_json_count(actions) > MAX_ACTIONS) goto bad;
            for (size_t j = 0; pw_json_index(actions, j, &a); j++)
                if (!parse_action(a, &rl->actions[rl->n++])) goto bad;
        }
    }
    if (pw_json_get(root, "descriptors", &arr)) {
        why = "descriptors: at most 64, each with 1-8 entries {key, value} and a valid token_bucket";
        if (pw_json_count(arr) > MAX_DESCRIPTORS) goto bad;
        for (size_t i = 0; pw_json_index(arr, i, &item); i++) {
            descriptor *d = &c->descriptors[c->n_descriptors++];
            if (!pw_json_get(item, "entries", &entries) || pw_json_count(entries) > MAX_ENTRIES) goto bad;
            for (size_t j = 0; pw_json_index(entries, j, &entry); j++) {
                d->keys[d->n] = pw_json_get_string(entry, "key");
                d->values[d->n] = pw_json_get_string(entry, "value");
                if (!d->keys[d->n++]) goto bad;
                if (!d->values[d->n - 1] || !*d->values[d->n - 1]) {
                    free(d->values[d->n - 1]);
                    d->values[d->n - 1] = NULL;
                    d->dynamic = true;
                }
            }
            if (d->n == 0 || !pw_json_get(item, "token_bucket", &v) || !parse_bucket(v, &d->bucket)) goto bad;
        }
    }
    /* Buckets are named by plugin and configuration: another plugin in the same VM, or this one
     * after a configuration change, never inherits stale buckets with other limits. */
    char *plugin = pw_get_property_str("plugin_name");
    uint64_t h = fnv64(FNV64_INIT, text, len);
    if (plugin) h = fnv64(h, plugin, strlen(plugin));
    free(plugin);
    snprintf(c->key_prefix, sizeof c->key_prefix, "envoyext.ratelimit/%016llx", (unsigned long long)h);
    return c;
bad:
    pw_logf(PW_LOG_ERROR, "ratelimit: invalid configuration: %s", why);
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

/* ---- shared buckets -------------------------------------------------------------------------- */

typedef enum { TAKEN, EMPTY, FAILED } outcome;

/* Take one token from the bucket stored at `key`. On TAKEN and EMPTY, *remaining and *wait_ns say
 * what is left and how long until the next token. */
static outcome take(const char *key, const bucket_spec *b, int64_t now, int64_t *remaining, int64_t *wait_ns) {
    int64_t T = b->ns_per_token;
    /* The earliest empty_at that matters: anything older is a full bucket. */
    int64_t full_at = b->max > now / T ? 0 : now - b->max * T;
    for (int attempt = 0; attempt < CAS_RETRIES; attempt++) {
        char *value = NULL;
        size_t len = 0;
        uint32_t cas = 0;
        int64_t empty_at = 0;
        pw_status st = pw_get_shared_data(key, &value, &len, &cas);
        if (st == PW_OK && len == sizeof empty_at) memcpy(&empty_at, value, sizeof empty_at);
        free(value);
        if (st == PW_NOT_FOUND) {
            /* A new bucket, full. The host has no create-if-absent, so two workers creating the
             * same bucket in the same instant may both write it: at most one extra token, once. */
            cas = 0;
        } else if (st != PW_OK || len != sizeof empty_at) {
            return FAILED;
        }
        if (empty_at < full_at) empty_at = full_at;
        if (now - empty_at < T) {
            *remaining = 0;
            *wait_ns = empty_at + T - now;
            return EMPTY;
        }
        empty_at += T;
        st = pw_set_shared_data(key, (const char *)&empty_at, sizeof empty_at, cas);
        if (st == PW_OK) {
            *remaining = (now - empty_at) / T;
            *wait_ns = *remaining >= 1 ? 0 : empty_at + T - now;
            return TAKEN;
        }
        if (st != PW_CAS_MISMATCH) return FAILED;
        /* Another worker took a token in between: read again. */
    }
    return FAILED;
}

/* Count a new distinct value of dynamic descriptor `d`; false once max_dynamic_descriptors is
 * reached. Shared data has no delete, so values are never forgotten: past the cap, new values
 * share one overflow bucket (bounded memory; they are limited together, never let through). */
static bool admit_value(const config *c, size_t d) {
    char key[96];
    snprintf(key, sizeof key, "%s/%zu/count", c->key_prefix, d);
    for (int attempt = 0; attempt < CAS_RETRIES; attempt++) {
        char *value = NULL;
        size_t len = 0;
        uint32_t cas = 0;
        int64_t n = 0;
        pw_status st = pw_get_shared_data(key, &value, &len, &cas);
        if (st == PW_OK && len == sizeof n) memcpy(&n, value, sizeof n);
        free(value);
        if (n >= c->max_dynamic) return false;
        n++;
        st = pw_set_shared_data(key, (const char *)&n, sizeof n, st == PW_OK ? cas : 0);
        if (st == PW_OK) return true;
        if (st != PW_CAS_MISMATCH) return false;
    }
    return false;
}

/* ---- descriptors ----------------------------------------------------------------------------- */

typedef struct {
    const char *keys[MAX_ACTIONS];
    char *values[MAX_ACTIONS];
    size_t n;
} request_descriptor;

static char *client_ip(void) {
    char *addr = pw_get_property_str("source.address"); /* "1.2.3.4:5678" or "[::1]:5678" */
    if (!addr) return strdup("");
    char *colon = strrchr(addr, ':');
    if (colon && strchr(addr, '.') == NULL && addr[0] != '[') colon = NULL; /* bare IPv6 */
    if (colon) *colon = 0;
    if (addr[0] == '[') {
        size_t n = strlen(addr);
        if (n >= 2 && addr[n - 1] == ']') addr[n - 1] = 0;
        memmove(addr, addr + 1, strlen(addr));
    }
    return addr;
}

/* One descriptor from one rate_limits entry, by Envoy's rule: an absent header drops the whole
 * descriptor unless skip_if_absent, which drops just its entry. False: no descriptor. */
static bool make_descriptor(const rate_limit *rl, request_descriptor *out) {
    out->n = 0;
    for (size_t i = 0; i < rl->n; i++) {
        const action *a = &rl->actions[i];
        char *v = a->kind == A_HEADER ? pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, a->header)
                : a->kind == A_REMOTE_ADDRESS ? client_ip() : strdup(a->value);
        if (!v) {
            if (a->kind == A_HEADER && a->skip_if_absent) continue;
            for (size_t j = 0; j < out->n; j++) free(out->values[j]);
            out->n = 0;
            return false;
        }
        out->keys[out->n] = a->key;
        out->values[out->n++] = v;
    }
    return out->n > 0;
}

typedef struct {
    const bucket_spec *bucket;
    char key[128];
} match;

/* The bucket a request descriptor takes its token from: an exact match of keys and values first,
 * else a descriptor whose value-less entries match any value, one bucket per distinct value. */
static bool find_bucket(const config *c, const request_descriptor *r, match *m) {
    int dynamic = -1;
    for (size_t d = 0; d < c->n_descriptors; d++) {
        const descriptor *ds = &c->descriptors[d];
        bool fits = ds->n == r->n;
        for (size_t i = 0; fits && i < ds->n; i++)
            fits = strcmp(ds->keys[i], r->keys[i]) == 0 && (!ds->values[i] || strcmp(ds->values[i], r->values[i]) == 0);
        if (!fits) continue;
        if (!ds->dynamic) {
            m->bucket = &ds->bucket;
            snprintf(m->key, sizeof m->key, "%s/%zu", c->key_prefix, d);
            return true;
        }
        if (dynamic < 0) dynamic = (int)d;
    }
    if (dynamic < 0) return false;
    const descriptor *ds = &c->descriptors[dynamic];
    /* Values are hashed: keys stay short whatever a client sends. */
    uint64_t h = FNV64_INIT;
    for (size_t i = 0; i < ds->n; i++)
        if (!ds->values[i]) h = fnv64(h, r->values[i], strlen(r->values[i]) + 1);
    m->bucket = &ds->bucket;
    snprintf(m->key, sizeof m->key, "%s/%d/%016llx", c->key_prefix, dynamic, (unsigned long long)h);
    char *probe = NULL;
    size_t len;
    if (pw_get_shared_data(m->key, &probe, &len, NULL) == PW_NOT_FOUND && !admit_value(c, (size_t)dynamic))
        snprintf(m->key, sizeof m->key, "%s/%d/overflow", c->key_prefix, dynamic);
    free(probe);
    return true;
}

/* ---- the stream ------------------------------------------------------------------------------ */

static int64_t ceil_seconds(int64_t ns) { return (ns + 999999999) / 1000000000; }

static void deny(const config *c, stream *s, const bucket_spec *b, int64_t wait_ns) {
    char limit[24], reset[24], retry[24];
    snprintf(limit, sizeof limit, "%lld", (long long)b->max);
    snprintf(reset, sizeof reset, "%lld", (long long)ceil_seconds(wait_ns));
    snprintf(retry, sizeof retry, "%lld", (long long)(ceil_seconds(wait_ns) < 1 ? 1 : ceil_seconds(wait_ns)));
    pw_header headers[] = {
        PW_HEADER("x-ratelimit-limit", limit), PW_HEADER("x-ratelimit-remaining", "0"),
        PW_HEADER("x-ratelimit-reset", reset), PW_HEADER("retry-after", retry),
    };
    s->limited = true;
    pw_send_local_response(429, "local_rate_limited", BODY, strlen(BODY), headers,
                            c->headers ? sizeof headers / sizeof *headers : 0, PW_GRPC_STATUS_NONE);
}

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool eos) {
    const config *c = ctx->root->data;
    stream *s = calloc(1, sizeof(stream));
    if (!c || !s) { free(s); return PW_CONTINUE; }
    free(ctx->data);
    ctx->data = s;

    match matches[MAX_RATE_LIMITS + 1];
    size_t n = 0;
    for (size_t i = 0; i < c->n_rate_limits; i++) {
        request_descriptor r;
        if (!make_descriptor(&c->rate_limits[i], &r)) continue;
        if (find_bucket(c, &r, &matches[n])) n++;
        for (size_t j = 0; j < r.n; j++) free(r.values[j]);
    }
    /* Like Envoy: the slowest-filling bucket first (a stable insertion sort keeps config order on
     * ties), so it is the one that denies and the one reported in the headers. */
    for (size_t i = 1; i < n; i++) {
        match m = matches[i];
        size_t j = i;
        for (; j > 0 && matches[j - 1].bucket->rate > m.bucket->rate; j--) matches[j] = matches[j - 1];
        matches[j] = m;
    }
    if (n == 0 || c->always_default) {
        matches[n].bucket = &c->bucket;
        snprintf(matches[n].key, sizeof matches[n].key, "%s/default", c->key_prefix);
        n++;
    }
    int64_t now = (int64_t)pw_now_ns();
    for (size_t i = 0; i < n; i++) {
        int64_t remaining = 0, wait_ns = 0;
        outcome o = take(matches[i].key, matches[i].bucket, now, &remaining, &wait_ns);
        if (o == FAILED) {
            /* Fail open: a limiter that cannot read its state must not take traffic down. */
            pw_logf(PW_LOG_WARN, "ratelimit: bucket %s unavailable, not limiting", matches[i].key);
            continue;
        }
        if (o == EMPTY) {
            deny(c, s, matches[i].bucket, wait_ns);
            return PW_PAUSE;
        }
        if (i == 0) { /* Envoy reports the first matched descriptor's bucket */
            s->report = c->headers;
            s->limit = matches[i].bucket->max;
            s->remaining = remaining;
            s->reset = ceil_seconds(wait_ns);
        }
    }
    return PW_CONTINUE;
}

pw_action pw_on_response_headers(pw_ctx *ctx, uint32_t num_headers, bool eos) {
    stream *s = ctx->data;
    if (!s || !s->report || s->limited) return PW_CONTINUE;
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)s->limit);
    pw_replace_header(PW_MAP_HTTP_RESPONSE_HEADERS, "x-ratelimit-limit", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)s->remaining);
    pw_replace_header(PW_MAP_HTTP_RESPONSE_HEADERS, "x-ratelimit-remaining", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)s->reset);
    pw_replace_header(PW_MAP_HTTP_RESPONSE_HEADERS, "x-ratelimit-reset", buf);
    return PW_CONTINUE;
}

void pw_on_delete(pw_ctx *ctx) { free(ctx->data); }
