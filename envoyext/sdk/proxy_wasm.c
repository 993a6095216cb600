/*
 * proxy_wasm.c - the envoyext C SDK runtime, compiled alongside every filter.
 *
 * It defines the module's exports (spec: proxy-wasm ABI v0.2.1, "Callbacks
 * exposed by the Wasm module"), keeps the table of live contexts, dispatches
 * to the pw_on_* hooks of proxy_wasm.h and implements the pw_* wrappers.
 * Unused wrappers cost nothing: the linker drops what the filter never calls.
 */
#include "proxy_wasm.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PW_EXPORT(name) __attribute__((export_name(#name)))
#define PW_WEAK __attribute__((weak))

/* ======================================================================== */
/* Integration and memory (spec, "Integration", "Memory management")        */
/* ======================================================================== */

/* The marker export the host reads to pick the ABI version; never called. */
PW_EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}

/* The host allocates every buffer it returns (header values, bodies, ...)
 * through this. Envoy (proxy-wasm-cpp-host) looks up `malloc` first and
 * refuses a module without it; the spec names `proxy_on_memory_allocate`
 * as the successor, so both are exported. The extra zeroed byte makes every
 * host-returned buffer a valid C string (see proxy_wasm.h, MEMORY). It must
 * not call into the host: cpp-host forbids host calls while allocating. */
static void *pw__host_alloc(size_t size) {
    if (size == SIZE_MAX) return NULL;
    char *p = (char *)malloc(size + 1);
    if (p) p[size] = 0;
    return p;
}
PW_EXPORT(malloc) void *pw__export_malloc(size_t size) { return pw__host_alloc(size); }
PW_EXPORT(proxy_on_memory_allocate) void *proxy_on_memory_allocate(size_t size) { return pw__host_alloc(size); }

void pw_free(void *p) { free(p); }

/* Out-parameter discipline shared by all wrappers that receive host memory:
 * on PW_OK hand back a non-NULL, NUL-terminated buffer (the host writes a NULL
 * pointer for an empty value: spec-wise size 0 needs no allocation); on error
 * hand back NULL/0 so the caller can free() unconditionally. */
static pw_status pw__take(uint32_t st, char **data, size_t *len, char *got, size_t got_len) {
    if (st != PW_OK) {
        free(got);
        if (data) *data = NULL;
        if (len) *len = 0;
        return (pw_status)st;
    }
    if (!got) {
        got = (char *)calloc(1, 1);
        got_len = 0;
        if (!got) st = PW_INTERNAL_FAILURE;
    }
    if (data) *data = got; else free(got);
    if (len) *len = got ? got_len : 0;
    return (pw_status)st;
}

/* ======================================================================== */
/* Context table: a small open-addressing hash map, uint32 -> uintptr_t.     */
/* Streams come and go at request rate, so lookups must not be linear.      */
/* ======================================================================== */

typedef struct {
    uint32_t key;
    uint32_t used;
    uintptr_t val;
} pw__slot;

typedef struct {
    pw__slot *slots;
    uint32_t cap; /* power of two, or 0 */
    uint32_t len;
} pw__map;

static uint32_t pw__hash(uint32_t k) {
    k ^= k >> 16;
    k *= 0x7feb352dU;
    k ^= k >> 15;
    k *= 0x846ca68bU;
    k ^= k >> 16;
    return k;
}

static pw__slot *pw__map_find(const pw__map *m, uint32_t key) {
    if (m->cap == 0) return NULL;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = pw__hash(key) & mask;; i = (i + 1) & mask) {
        pw__slot *s = &m->slots[i];
        if (!s->used) return NULL;
        if (s->key == key) return s;
    }
}

static void pw__map_insert_fresh(pw__slot *slots, uint32_t cap, uint32_t key, uintptr_t val) {
    uint32_t mask = cap - 1;
    uint32_t i = pw__hash(key) & mask;
    while (slots[i].used) i = (i + 1) & mask;
    slots[i].key = key;
    slots[i].used = 1;
    slots[i].val = val;
}

static bool pw__map_put(pw__map *m, uint32_t key, uintptr_t val) {
    pw__slot *s = pw__map_find(m, key);
    if (s) {
        s->val = val;
        return true;
    }
    if ((m->len + 1) * 2 > m->cap) { /* keep load <= 1/2 so probes stay short */
        uint32_t ncap = m->cap ? m->cap * 2 : 16;
        pw__slot *ns = (pw__slot *)calloc(ncap, sizeof *ns);
        if (!ns) return false;
        for (uint32_t i = 0; i < m->cap; i++)
            if (m->slots[i].used) pw__map_insert_fresh(ns, ncap, m->slots[i].key, m->slots[i].val);
        free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    pw__map_insert_fresh(m->slots, m->cap, key, val);
    m->len++;
    return true;
}

/* Linear-probing delete by backward shift: no tombstones to accumulate. */
static bool pw__map_del(pw__map *m, uint32_t key, uintptr_t *val) {
    pw__slot *s = pw__map_find(m, key);
    if (!s) return false;
    if (val) *val = s->val;
    uint32_t mask = m->cap - 1;
    uint32_t i = (uint32_t)(s - m->slots), j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->slots[j].used) break;
        uint32_t h = pw__hash(m->slots[j].key) & mask;
        /* The entry at j may fill the hole at i unless its home h lies
         * cyclically in (i, j]. */
        bool stays = (i <= j) ? (i < h && h <= j) : (i < h || h <= j);
        if (!stays) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].used = 0;
    m->len--;
    return true;
}

typedef struct {
    bool is_root;
    union {
        pw_root root;
        pw_ctx stream;
    } u;
} pw__context;

static pw__map pw__contexts;
/* Outstanding calls: token -> id of the context that made the call. */
static pw__map pw__http_calls;
static pw__map pw__grpc_calls;   /* unary: done at receive or close */
static pw__map pw__grpc_streams; /* streams: done at close */
/* The context the host is calling into, or the one made effective since. */
static uint32_t pw__current_id;

static pw__context *pw__lookup(uint32_t id) {
    pw__slot *s = pw__map_find(&pw__contexts, id);
    return s ? (pw__context *)s->val : NULL;
}

pw_ctx *pw_find_ctx(uint32_t id) {
    pw__context *c = pw__lookup(id);
    return (c && !c->is_root) ? &c->u.stream : NULL;
}

pw_root *pw_find_root(uint32_t id) {
    pw__context *c = pw__lookup(id);
    return (c && c->is_root) ? &c->u.root : NULL;
}

static pw__context *pw__new_context(uint32_t id, bool is_root) {
    pw__context *c = (pw__context *)calloc(1, sizeof *c);
    if (!c) return NULL;
    c->is_root = is_root;
    if (!pw__map_put(&pw__contexts, id, (uintptr_t)c)) {
        free(c);
        return NULL;
    }
    return c;
}

/* The plugin context for `id`. Created on demand so a callback never sees a
 * NULL root, even if a host skipped proxy_on_context_create for it. */
static pw_root *pw__root(uint32_t id) {
    pw__context *c = pw__lookup(id);
    if (c) return c->is_root ? &c->u.root : c->u.stream.root;
    c = pw__new_context(id, true);
    if (!c) return NULL;
    c->u.root.id = id;
    return &c->u.root;
}

/* unused when the build left out every stream export (see "Default hooks") */
__attribute__((unused)) static pw_ctx *pw__enter_stream(uint32_t id) {
    pw__current_id = id;
    return pw_find_ctx(id);
}

static pw_root *pw__enter_root(uint32_t id) {
    pw__current_id = id;
    return pw__root(id);
}

/* ======================================================================== */
/* Default hooks: weak, so a filter's own definition wins at link time.     */
/* ======================================================================== */

/* Per-stream callbacks cost a call into the VM each (in Envoy, a V8 entry: most of a small
 * filter's cost per request). A host skips a callback the module does not export, with the same
 * effect as these defaults (cpp-host: continue, done, nothing), so `envoyext build` leaves out the
 * export of every hook below that the filter's sources never mention, by defining
 * PW_ABSENT_<hook>. The default is then a strong definition: a filter that defines the hook after
 * all (a macro-made name) fails to link with "duplicate symbol", and the build links again with
 * the export kept. A hook is never silently dead. */

PW_WEAK bool pw_on_vm_start(pw_root *root, const char *vm_config, size_t len) {
    (void)root, (void)vm_config, (void)len;
    return true;
}
PW_WEAK void pw_on_root_create(pw_root *root) { (void)root; }
PW_WEAK bool pw_on_configure(pw_root *root, const char *config, size_t len) {
    (void)root, (void)config, (void)len;
    return true;
}
PW_WEAK void pw_on_tick(pw_root *root) { (void)root; }
PW_WEAK void pw_on_queue_ready(pw_root *root, uint32_t queue_id) { (void)root, (void)queue_id; }
PW_WEAK void pw_on_foreign_function(pw_root *root, uint32_t function_id, const char *args, size_t len) {
    (void)root, (void)function_id, (void)args, (void)len;
}
#ifndef PW_ABSENT_pw_on_root_done
PW_WEAK
#endif
bool pw_on_root_done(pw_root *root) {
    (void)root;
    return true;
}
PW_WEAK void pw_on_root_delete(pw_root *root) { (void)root; }

PW_WEAK void pw_on_create(pw_ctx *ctx) { (void)ctx; }
#ifndef PW_ABSENT_pw_on_done
PW_WEAK
#endif
bool pw_on_done(pw_ctx *ctx) {
    (void)ctx;
    return true;
}
#ifndef PW_ABSENT_pw_on_log
PW_WEAK
#endif
void pw_on_log(pw_ctx *ctx) { (void)ctx; }
PW_WEAK void pw_on_delete(pw_ctx *ctx) { (void)ctx; }

#ifndef PW_ABSENT_pw_on_request_headers
PW_WEAK
#endif
pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t n, bool eos) {
    (void)ctx, (void)n, (void)eos;
    return PW_CONTINUE;
}
#ifndef PW_ABSENT_pw_on_request_body
PW_WEAK
#endif
pw_action pw_on_request_body(pw_ctx *ctx, size_t size, bool eos) {
    (void)ctx, (void)size, (void)eos;
    return PW_CONTINUE;
}
#ifndef PW_ABSENT_pw_on_request_trailers
PW_WEAK
#endif
pw_action pw_on_request_trailers(pw_ctx *ctx, uint32_t n) {
    (void)ctx, (void)n;
    return PW_CONTINUE;
}
#ifndef PW_ABSENT_pw_on_response_headers
PW_WEAK
#endif
pw_action pw_on_response_headers(pw_ctx *ctx, uint32_t n, bool eos) {
    (void)ctx, (void)n, (void)eos;
    return PW_CONTINUE;
}
#ifndef PW_ABSENT_pw_on_response_body
PW_WEAK
#endif
pw_action pw_on_response_body(pw_ctx *ctx, size_t size, bool eos) {
    (void)ctx, (void)size, (void)eos;
    return PW_CONTINUE;
}
#ifndef PW_ABSENT_pw_on_response_trailers
PW_WEAK
#endif
pw_action pw_on_response_trailers(pw_ctx *ctx, uint32_t n) {
    (void)ctx, (void)n;
    return PW_CONTINUE;
}

#ifndef PW_ABSENT_pw_on_new_connection
PW_WEAK
#endif
pw_action pw_on_new_connection(pw_ctx *ctx) {
    (void)ctx;
    return PW_CONTINUE;
}
#ifndef PW_ABSENT_pw_on_downstream_data
PW_WEAK
#endif
pw_action pw_on_downstream_data(pw_ctx *ctx, size_t size, bool eos) {
    (void)ctx, (void)size, (void)eos;
    return PW_CONTINUE;
}
#ifndef PW_ABSENT_pw_on_upstream_data
PW_WEAK
#endif
pw_action pw_on_upstream_data(pw_ctx *ctx, size_t size, bool eos) {
    (void)ctx, (void)size, (void)eos;
    return PW_CONTINUE;
}
#ifndef PW_ABSENT_pw_on_downstream_connection_close
PW_WEAK
#endif
void pw_on_downstream_connection_close(pw_ctx *ctx, pw_peer_type peer) { (void)ctx, (void)peer; }
#ifndef PW_ABSENT_pw_on_upstream_connection_close
PW_WEAK
#endif
void pw_on_upstream_connection_close(pw_ctx *ctx, pw_peer_type peer) { (void)ctx, (void)peer; }

PW_WEAK void pw_on_http_call_response(pw_root *root, pw_ctx *ctx, uint32_t token, uint32_t num_headers,
                                      size_t body_size, uint32_t num_trailers) {
    (void)root, (void)ctx, (void)token, (void)num_headers, (void)body_size, (void)num_trailers;
}
PW_WEAK void pw_on_grpc_receive_initial_metadata(pw_root *root, pw_ctx *ctx, uint32_t token, uint32_t n) {
    (void)root, (void)ctx, (void)token, (void)n;
}
PW_WEAK void pw_on_grpc_receive(pw_root *root, pw_ctx *ctx, uint32_t token, size_t size) {
    (void)root, (void)ctx, (void)token, (void)size;
}
PW_WEAK void pw_on_grpc_receive_trailing_metadata(pw_root *root, pw_ctx *ctx, uint32_t token, uint32_t n) {
    (void)root, (void)ctx, (void)token, (void)n;
}
PW_WEAK void pw_on_grpc_close(pw_root *root, pw_ctx *ctx, uint32_t token, uint32_t status) {
    (void)root, (void)ctx, (void)token, (void)status;
}

/* ======================================================================== */
/* Exports: context lifecycle (spec, "Context lifecycle")                    */
/* ======================================================================== */

/* parent 0 means a plugin context, anything else a stream of that plugin. */
PW_EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t id, uint32_t parent_id) {
    pw__current_id = id;
    if (pw__lookup(id)) return; /* already known: nothing to redo */
    if (parent_id == 0) {
        pw__context *c = pw__new_context(id, true);
        if (!c) return;
        c->u.root.id = id;
        pw_on_root_create(&c->u.root);
        return;
    }
    pw_root *root = pw__root(parent_id);
    if (!root) return;
    pw__context *c = pw__new_context(id, false);
    if (!c) return;
    c->u.stream.id = id;
    c->u.stream.root = root;
    pw_on_create(&c->u.stream);
}

#if !(defined(PW_ABSENT_pw_on_done) && defined(PW_ABSENT_pw_on_root_done))
PW_EXPORT(proxy_on_done) uint32_t proxy_on_done(uint32_t id) {
    pw__current_id = id;
    pw__context *c = pw__lookup(id);
    if (!c) return 1;
    return c->is_root ? pw_on_root_done(&c->u.root) : pw_on_done(&c->u.stream);
}
#endif

#if !(defined(PW_ABSENT_pw_on_log))
PW_EXPORT(proxy_on_log) void proxy_on_log(uint32_t id) {
    pw_ctx *ctx = pw__enter_stream(id);
    if (ctx) pw_on_log(ctx);
}
#endif

PW_EXPORT(proxy_on_delete) void proxy_on_delete(uint32_t id) {
    pw__current_id = id;
    pw__context *c = pw__lookup(id);
    if (!c) return;
    if (c->is_root) pw_on_root_delete(&c->u.root);
    else pw_on_delete(&c->u.stream);
    pw__map_del(&pw__contexts, id, NULL);
    free(c);
}

/* ======================================================================== */
/* Exports: configuration, timers, queues, FFI                               */
/* ======================================================================== */

/* Read buffer `type` in full and hand it to `fn`; the bytes live only for
 * the call (they are the host's copy, in our heap). */
static char *pw__read_whole(pw_buffer_type type, size_t size, size_t *len) {
    char *data = NULL;
    *len = 0;
    if (size == 0) return NULL;
    if (pw_get_buffer(type, 0, size, &data, len) != PW_OK) return NULL;
    return data;
}

PW_EXPORT(proxy_on_vm_start) uint32_t proxy_on_vm_start(uint32_t root_id, size_t size) {
    pw_root *root = pw__enter_root(root_id);
    if (!root) return 0;
    size_t len;
    char *cfg = pw__read_whole(PW_BUFFER_VM_CONFIGURATION, size, &len);
    bool ok = pw_on_vm_start(root, cfg ? cfg : "", len);
    free(cfg);
    return ok;
}

PW_EXPORT(proxy_on_configure) uint32_t proxy_on_configure(uint32_t root_id, size_t size) {
    pw_root *root = pw__enter_root(root_id);
    if (!root) return 0;
    size_t len;
    char *cfg = pw__read_whole(PW_BUFFER_PLUGIN_CONFIGURATION, size, &len);
    if (size && !cfg) {
        pw_log(PW_LOG_ERROR, "proxy_wasm.c: could not read the plugin configuration");
        return 0;
    }
    bool ok = pw_on_configure(root, cfg ? cfg : "", len);
    free(cfg);
    return ok;
}

PW_EXPORT(proxy_on_tick) void proxy_on_tick(uint32_t root_id) {
    pw_root *root = pw__enter_root(root_id);
    if (root) pw_on_tick(root);
}

PW_EXPORT(proxy_on_queue_ready) void proxy_on_queue_ready(uint32_t root_id, uint32_t queue_id) {
    pw_root *root = pw__enter_root(root_id);
    if (root) pw_on_queue_ready(root, queue_id);
}

PW_EXPORT(proxy_on_foreign_function)
void proxy_on_foreign_function(uint32_t root_id, uint32_t function_id, size_t size) {
    pw_root *root = pw__enter_root(root_id);
    if (!root) return;
    size_t len;
    char *args = pw__read_whole(PW_BUFFER_FOREIGN_FUNCTION_ARGUMENTS, size, &len);
    pw_on_foreign_function(root, function_id, args ? args : "", len);
    free(args);
}

/* ======================================================================== */
/* Exports: HTTP and TCP streams (spec, "HTTP", "TCP streams")               */
/* ======================================================================== */

/* A callback for a stream we do not know (no proxy_on_context_create seen)
 * continues: doing nothing is the only safe thing for a filter to do. */
#define PW__STREAM_ACTION(call)              \
    pw_ctx *ctx = pw__enter_stream(id);      \
    return ctx ? (uint32_t)(call) : PW_CONTINUE

#if !(defined(PW_ABSENT_pw_on_request_headers))
PW_EXPORT(proxy_on_request_headers) uint32_t proxy_on_request_headers(uint32_t id, size_t n, uint32_t eos) {
    PW__STREAM_ACTION(pw_on_request_headers(ctx, (uint32_t)n, eos != 0));
}
#endif
#if !(defined(PW_ABSENT_pw_on_request_body))
PW_EXPORT(proxy_on_request_body) uint32_t proxy_on_request_body(uint32_t id, size_t size, uint32_t eos) {
    PW__STREAM_ACTION(pw_on_request_body(ctx, size, eos != 0));
}
#endif
#if !(defined(PW_ABSENT_pw_on_request_trailers))
PW_EXPORT(proxy_on_request_trailers) uint32_t proxy_on_request_trailers(uint32_t id, size_t n) {
    PW__STREAM_ACTION(pw_on_request_trailers(ctx, (uint32_t)n));
}
#endif
#if !(defined(PW_ABSENT_pw_on_response_headers))
PW_EXPORT(proxy_on_response_headers) uint32_t proxy_on_response_headers(uint32_t id, size_t n, uint32_t eos) {
    PW__STREAM_ACTION(pw_on_response_headers(ctx, (uint32_t)n, eos != 0));
}
#endif
#if !(defined(PW_ABSENT_pw_on_response_body))
PW_EXPORT(proxy_on_response_body) uint32_t proxy_on_response_body(uint32_t id, size_t size, uint32_t eos) {
    PW__STREAM_ACTION(pw_on_response_body(ctx, size, eos != 0));
}
#endif
#if !(defined(PW_ABSENT_pw_on_response_trailers))
PW_EXPORT(proxy_on_response_trailers) uint32_t proxy_on_response_trailers(uint32_t id, size_t n) {
    PW__STREAM_ACTION(pw_on_response_trailers(ctx, (uint32_t)n));
}
#endif

#if !(defined(PW_ABSENT_pw_on_new_connection))
PW_EXPORT(proxy_on_new_connection) uint32_t proxy_on_new_connection(uint32_t id) {
    PW__STREAM_ACTION(pw_on_new_connection(ctx));
}
#endif
#if !(defined(PW_ABSENT_pw_on_downstream_data))
PW_EXPORT(proxy_on_downstream_data) uint32_t proxy_on_downstream_data(uint32_t id, size_t size, uint32_t eos) {
    PW__STREAM_ACTION(pw_on_downstream_data(ctx, size, eos != 0));
}
#endif
#if !(defined(PW_ABSENT_pw_on_upstream_data))
PW_EXPORT(proxy_on_upstream_data) uint32_t proxy_on_upstream_data(uint32_t id, size_t size, uint32_t eos) {
    PW__STREAM_ACTION(pw_on_upstream_data(ctx, size, eos != 0));
}
#endif
#if !(defined(PW_ABSENT_pw_on_downstream_connection_close))
PW_EXPORT(proxy_on_downstream_connection_close)
void proxy_on_downstream_connection_close(uint32_t id, uint32_t peer) {
    pw_ctx *ctx = pw__enter_stream(id);
    if (ctx) pw_on_downstream_connection_close(ctx, (pw_peer_type)peer);
}
#endif
#if !(defined(PW_ABSENT_pw_on_upstream_connection_close))
PW_EXPORT(proxy_on_upstream_connection_close)
void proxy_on_upstream_connection_close(uint32_t id, uint32_t peer) {
    pw_ctx *ctx = pw__enter_stream(id);
    if (ctx) pw_on_upstream_connection_close(ctx, (pw_peer_type)peer);
}
#endif

/* ======================================================================== */
/* Exports: call responses. The host delivers them to the plugin context;   */
/* give the hook the stream that made the call, made effective.             */
/* ======================================================================== */

static pw_ctx *pw__caller(pw__map *calls, uint32_t token, bool forget) {
    pw__slot *s = pw__map_find(calls, token);
    if (!s) return NULL;
    uint32_t caller = (uint32_t)s->val;
    if (forget) pw__map_del(calls, token, NULL);
    pw_ctx *ctx = pw_find_ctx(caller);
    if (ctx && pw_set_effective_context(ctx->id) != PW_OK) return NULL;
    return ctx;
}

PW_EXPORT(proxy_on_http_call_response)
void proxy_on_http_call_response(uint32_t root_id, uint32_t token, size_t num_headers, size_t body_size,
                                 size_t num_trailers) {
    pw_root *root = pw__enter_root(root_id);
    pw_ctx *ctx = pw__caller(&pw__http_calls, token, true);
    if (root) pw_on_http_call_response(root, ctx, token, (uint32_t)num_headers, body_size, (uint32_t)num_trailers);
}

static pw_ctx *pw__grpc_caller(uint32_t token, bool final) {
    if (pw__map_find(&pw__grpc_calls, token)) return pw__caller(&pw__grpc_calls, token, final);
    return pw__caller(&pw__grpc_streams, token, false);
}

PW_EXPORT(proxy_on_grpc_receive_initial_metadata)
void proxy_on_grpc_receive_initial_metadata(uint32_t root_id, uint32_t token, size_t n) {
    pw_root *root = pw__enter_root(root_id);
    pw_ctx *ctx = pw__grpc_caller(token, false);
    if (root) pw_on_grpc_receive_initial_metadata(root, ctx, token, (uint32_t)n);
}

/* A unary call's message is its last event on success (Envoy sends no close). */
PW_EXPORT(proxy_on_grpc_receive) void proxy_on_grpc_receive(uint32_t root_id, uint32_t token, size_t size) {
    pw_root *root = pw__enter_root(root_id);
    pw_ctx *ctx = pw__grpc_caller(token, true);
    if (root) pw_on_grpc_receive(root, ctx, token, size);
}

PW_EXPORT(proxy_on_grpc_receive_trailing_metadata)
void proxy_on_grpc_receive_trailing_metadata(uint32_t root_id, uint32_t token, size_t n) {
    pw_root *root = pw__enter_root(root_id);
    pw_ctx *ctx = pw__grpc_caller(token, false);
    if (root) pw_on_grpc_receive_trailing_metadata(root, ctx, token, (uint32_t)n);
}

PW_EXPORT(proxy_on_grpc_close) void proxy_on_grpc_close(uint32_t root_id, uint32_t token, uint32_t status) {
    pw_root *root = pw__enter_root(root_id);
    pw_ctx *ctx = pw__grpc_caller(token, true);
    pw__map_del(&pw__grpc_streams, token, NULL);
    if (root) pw_on_grpc_close(root, ctx, token, status);
}

/* ======================================================================== */
/* Wrappers: status, logging, time                                           */
/* ======================================================================== */

const char *pw_status_str(pw_status s) {
    switch (s) {
    case PW_OK: return "OK";
    case PW_NOT_FOUND: return "NOT_FOUND";
    case PW_BAD_ARGUMENT: return "BAD_ARGUMENT";
    case PW_SERIALIZATION_FAILURE: return "SERIALIZATION_FAILURE";
    case PW_PARSE_FAILURE: return "PARSE_FAILURE";
    case PW_INVALID_MEMORY_ACCESS: return "INVALID_MEMORY_ACCESS";
    case PW_EMPTY: return "EMPTY";
    case PW_CAS_MISMATCH: return "CAS_MISMATCH";
    case PW_INTERNAL_FAILURE: return "INTERNAL_FAILURE";
    case PW_UNIMPLEMENTED: return "UNIMPLEMENTED";
    }
    return "UNKNOWN_STATUS";
}

static size_t pw__strlen(const char *s) { return s ? strlen(s) : 0; }

pw_status pw_log_n(pw_log_level level, const char *message, size_t len) {
    return (pw_status)proxy_log((uint32_t)level, message ? message : "", message ? len : 0);
}

pw_status pw_log(pw_log_level level, const char *message) { return pw_log_n(level, message, pw__strlen(message)); }

pw_status pw_get_log_level(pw_log_level *level) {
    uint32_t l = 0;
    pw_status st = (pw_status)proxy_get_log_level(&l);
    if (st == PW_OK && level) *level = (pw_log_level)l;
    return st;
}

bool pw_log_enabled(pw_log_level level) {
    pw_log_level host;
    /* If the host cannot tell, log: losing a line is worse than formatting it. */
    return pw_get_log_level(&host) != PW_OK || level >= host;
}

pw_status pw_logf(pw_log_level level, const char *fmt, ...) {
    if (!pw_log_enabled(level)) return PW_OK;
    char small[512];
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    pw_status st;
    if (n < 0) {
        st = pw_log(level, fmt); /* a format error: say something rather than nothing */
    } else if ((size_t)n < sizeof small) {
        st = pw_log_n(level, small, (size_t)n);
    } else {
        char *big = (char *)malloc((size_t)n + 1);
        if (big) {
            vsnprintf(big, (size_t)n + 1, fmt, ap2);
            st = pw_log_n(level, big, (size_t)n);
            free(big);
        } else {
            st = pw_log_n(level, small, sizeof small - 1); /* truncated beats lost */
        }
    }
    va_end(ap2);
    return st;
}

pw_status pw_get_current_time_ns(uint64_t *ns) {
    uint64_t t = 0;
    pw_status st = (pw_status)proxy_get_current_time_nanoseconds(&t);
    if (ns) *ns = st == PW_OK ? t : 0;
    return st;
}

uint64_t pw_now_ns(void) {
    uint64_t t;
    pw_get_current_time_ns(&t);
    return t;
}

pw_status pw_set_tick_period_ms(uint32_t ms) { return (pw_status)proxy_set_tick_period_milliseconds(ms); }

/* ======================================================================== */
/* Wrappers: buffers and configuration                                       */
/* ======================================================================== */

pw_status pw_get_buffer(pw_buffer_type type, size_t start, size_t max, char **data, size_t *len) {
    /* "All of it": ask for exactly what is there, since the spec lets a host
     * reject start + max beyond the end with BAD_ARGUMENT. */
    if (max == SIZE_MAX) {
        size_t size;
        pw_status st = pw_get_buffer_size(type, &size);
        if (st != PW_OK) return pw__take(st, data, len, NULL, 0);
        max = start < size ? size - start : 0;
    }
    char *got = NULL;
    size_t got_len = 0;
    uint32_t st = proxy_get_buffer_bytes((uint32_t)type, start, max, &got, &got_len);
    return pw__take(st, data, len, got, got_len);
}

pw_status pw_set_buffer(pw_buffer_type type, size_t start, size_t size, const char *data, size_t len) {
    return (pw_status)proxy_set_buffer_bytes((uint32_t)type, start, size, data ? data : "", data ? len : 0);
}

pw_status pw_get_buffer_size(pw_buffer_type type, size_t *size) {
    size_t s = 0;
    uint32_t flags = 0;
    pw_status st = (pw_status)proxy_get_buffer_status((uint32_t)type, &s, &flags);
    if (size) *size = st == PW_OK ? s : 0;
    return st;
}

pw_status pw_replace_buffer(pw_buffer_type type, const char *data, size_t len) {
    size_t size;
    pw_status st = pw_get_buffer_size(type, &size);
    if (st != PW_OK) return st;
    return pw_set_buffer(type, 0, size, data, len);
}

pw_status pw_append_buffer(pw_buffer_type type, const char *data, size_t len) {
    /* spec: start at or past the end appends; the maximum size_t always is. */
    return pw_set_buffer(type, SIZE_MAX, 0, data, len);
}

pw_status pw_prepend_buffer(pw_buffer_type type, const char *data, size_t len) {
    return pw_set_buffer(type, 0, 0, data, len);
}

pw_status pw_get_plugin_config(char **data, size_t *len) {
    return pw_get_buffer(PW_BUFFER_PLUGIN_CONFIGURATION, 0, SIZE_MAX, data, len);
}

pw_status pw_get_vm_config(char **data, size_t *len) {
    return pw_get_buffer(PW_BUFFER_VM_CONFIGURATION, 0, SIZE_MAX, data, len);
}

/* ======================================================================== */
/* Wrappers: header maps and the pairs serialization (spec, "Serialization") */
/* ======================================================================== */

static size_t pw__hlen(const char *s, size_t n) { return n ? n : pw__strlen(s); }

static void pw__put_u32(char *p, uint32_t v) { /* the wire is little-endian */
    p[0] = (char)(v & 0xff);
    p[1] = (char)((v >> 8) & 0xff);
    p[2] = (char)((v >> 16) & 0xff);
    p[3] = (char)((v >> 24) & 0xff);
}

static uint32_t pw__get_u32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] | ((uint32_t)u[1] << 8) | ((uint32_t)u[2] << 16) | ((uint32_t)u[3] << 24);
}

/* count, then (key length, value length) per pair, then each key and value
 * followed by a NUL. */
pw_status pw_serialize_pairs(const pw_header *pairs, size_t n, char **out, size_t *len) {
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!out || !len || (n && !pairs) || n > UINT32_MAX) return PW_BAD_ARGUMENT;
    size_t total = 4;
    for (size_t i = 0; i < n; i++) {
        size_t k = pw__hlen(pairs[i].key, pairs[i].key_len), v = pw__hlen(pairs[i].value, pairs[i].value_len);
        if (k > UINT32_MAX || v > UINT32_MAX || k + v > SIZE_MAX - 10 - total) return PW_BAD_ARGUMENT;
        total += 8 + k + 1 + v + 1;
    }
    char *buf = (char *)malloc(total);
    if (!buf) return PW_INTERNAL_FAILURE;
    pw__put_u32(buf, (uint32_t)n);
    char *sizes = buf + 4, *p = buf + 4 + 8 * n;
    for (size_t i = 0; i < n; i++) {
        size_t k = pw__hlen(pairs[i].key, pairs[i].key_len), v = pw__hlen(pairs[i].value, pairs[i].value_len);
        pw__put_u32(sizes + 8 * i, (uint32_t)k);
        pw__put_u32(sizes + 8 * i + 4, (uint32_t)v);
        if (k) memcpy(p, pairs[i].key, k);
        p += k;
        *p++ = 0;
        if (v) memcpy(p, pairs[i].value, v);
        p += v;
        *p++ = 0;
    }
    *out = buf;
    *len = total;
    return PW_OK;
}

pw_status pw_parse_pairs(const char *buf, size_t len, pw_headers *out) {
    if (!out) return PW_BAD_ARGUMENT;
    out->items = NULL;
    out->count = 0;
    out->raw = NULL;
    if (len == 0 || (len == 1 && buf && buf[0] == 0)) return PW_OK; /* the two empty forms */
    if (!buf || len < 4) return PW_PARSE_FAILURE;
    uint32_t n = pw__get_u32(buf);
    if (n == 0) return len == 4 ? PW_OK : PW_PARSE_FAILURE;
    if ((len - 4) / 8 < n) return PW_PARSE_FAILURE;
    pw_header *items = (pw_header *)calloc(n, sizeof *items);
    if (!items) return PW_INTERNAL_FAILURE;
    const char *sizes = buf + 4, *p = buf + 4 + 8 * (size_t)n, *end = buf + len;
    for (uint32_t i = 0; i < n; i++) {
        size_t k = pw__get_u32(sizes + 8 * (size_t)i), v = pw__get_u32(sizes + 8 * (size_t)i + 4);
        if (k >= (size_t)(end - p) || p[k] != 0) goto bad; /* k + 1 could wrap on wasm32 */
        items[i].key = p;
        items[i].key_len = k;
        p += k + 1;
        if (v >= (size_t)(end - p) || p[v] != 0) goto bad;
        items[i].value = p;
        items[i].value_len = v;
        p += v + 1;
    }
    if (p != end) goto bad;
    out->items = items;
    out->count = n;
    return PW_OK;
bad:
    free(items);
    return PW_PARSE_FAILURE;
}

void pw_headers_free(pw_headers *h) {
    if (!h) return;
    free(h->items);
    free(h->raw);
    h->items = NULL;
    h->raw = NULL;
    h->count = 0;
}

static bool pw__ieq(const char *a, size_t n, const char *b) {
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (y == 0) return false;
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y + 32);
        if (x != y) return false;
    }
    return b[n] == 0;
}

const char *pw_headers_get(const pw_headers *h, const char *name) {
    if (!h || !name) return NULL;
    for (size_t i = 0; i < h->count; i++)
        if (pw__ieq(h->items[i].key, h->items[i].key_len, name)) return h->items[i].value;
    return NULL;
}

pw_status pw_get_header_n(pw_map_type map, const char *name, size_t name_len, char **value, size_t *len) {
    char *got = NULL;
    size_t got_len = 0;
    uint32_t st = proxy_get_header_map_value((uint32_t)map, name ? name : "", name ? name_len : 0, &got, &got_len);
    return pw__take(st, value, len, got, got_len);
}

char *pw_get_header(pw_map_type map, const char *name) {
    char *v = NULL;
    pw_get_header_n(map, name, pw__strlen(name), &v, NULL);
    return v;
}

pw_status pw_add_header_n(pw_map_type map, const char *name, size_t name_len, const char *value, size_t value_len) {
    return (pw_status)proxy_add_header_map_value((uint32_t)map, name ? name : "", name ? name_len : 0,
                                                 value ? value : "", value ? value_len : 0);
}

pw_status pw_add_header(pw_map_type map, const char *name, const char *value) {
    return pw_add_header_n(map, name, pw__strlen(name), value, pw__strlen(value));
}

pw_status pw_replace_header_n(pw_map_type map, const char *name, size_t name_len, const char *value,
                              size_t value_len) {
    return (pw_status)proxy_replace_header_map_value((uint32_t)map, name ? name : "", name ? name_len : 0,
                                                     value ? value : "", value ? value_len : 0);
}

pw_status pw_replace_header(pw_map_type map, const char *name, const char *value) {
    return pw_replace_header_n(map, name, pw__strlen(name), value, pw__strlen(value));
}

pw_status pw_remove_header_n(pw_map_type map, const char *name, size_t name_len) {
    return (pw_status)proxy_remove_header_map_value((uint32_t)map, name ? name : "", name ? name_len : 0);
}

pw_status pw_remove_header(pw_map_type map, const char *name) {
    return pw_remove_header_n(map, name, pw__strlen(name));
}

pw_status pw_get_headers(pw_map_type map, pw_headers *out) {
    if (!out) return PW_BAD_ARGUMENT;
    out->items = NULL;
    out->count = 0;
    out->raw = NULL;
    char *raw = NULL;
    size_t len = 0;
    pw_status st = (pw_status)proxy_get_header_map_pairs((uint32_t)map, &raw, &len);
    if (st != PW_OK) {
        free(raw);
        return st;
    }
    st = pw_parse_pairs(raw, len, out);
    if (st != PW_OK) {
        free(raw);
        return st;
    }
    out->raw = raw;
    return PW_OK;
}

pw_status pw_set_headers(pw_map_type map, const pw_header *pairs, size_t n) {
    char *buf;
    size_t len;
    pw_status st = pw_serialize_pairs(pairs, n, &buf, &len);
    if (st != PW_OK) return st;
    st = (pw_status)proxy_set_header_map_pairs((uint32_t)map, buf, len);
    free(buf);
    return st;
}

pw_status pw_get_header_map_size(pw_map_type map, size_t *size) {
    size_t s = 0;
    pw_status st = (pw_status)proxy_get_header_map_size((uint32_t)map, &s);
    if (size) *size = st == PW_OK ? s : 0;
    return st;
}

/* ======================================================================== */
/* Wrappers: streams, local responses, calls                                 */
/* ======================================================================== */

pw_status pw_continue_stream(pw_stream_type stream) { return (pw_status)proxy_continue_stream((uint32_t)stream); }
pw_status pw_close_stream(pw_stream_type stream) { return (pw_status)proxy_close_stream((uint32_t)stream); }

pw_status pw_send_local_response(uint32_t status_code, const char *details, const char *body, size_t body_len,
                                 const pw_header *headers, size_t n_headers, int32_t grpc_status) {
    char *hb;
    size_t hl;
    pw_status st = pw_serialize_pairs(headers, n_headers, &hb, &hl);
    if (st != PW_OK) return st;
    st = (pw_status)proxy_send_local_response(status_code, details ? details : "", pw__strlen(details),
                                              body ? body : "", body ? body_len : 0, hb, hl,
                                              (uint32_t)grpc_status);
    free(hb);
    return st;
}

pw_status pw_respond(uint32_t status_code, const char *body, const pw_header *headers, size_t n_headers) {
    return pw_send_local_response(status_code, NULL, body, pw__strlen(body), headers, n_headers,
                                  PW_GRPC_STATUS_NONE);
}

/* Remember who asked, for the response dispatch above. A failed remember only
 * loses the stream pointer in the response hook; the call itself stands. */
static void pw__remember(pw__map *calls, uint32_t token) { pw__map_put(calls, token, pw__current_id); }

pw_status pw_http_call(const char *upstream, const pw_header *headers, size_t n_headers, const char *body,
                       size_t body_len, const pw_header *trailers, size_t n_trailers, uint32_t timeout_ms,
                       uint32_t *token) {
    char *hb = NULL, *tb = NULL;
    size_t hl = 0, tl = 0;
    pw_status st = pw_serialize_pairs(headers, n_headers, &hb, &hl);
    if (st == PW_OK) st = pw_serialize_pairs(trailers, n_trailers, &tb, &tl);
    uint32_t t = 0;
    if (st == PW_OK)
        st = (pw_status)proxy_http_call(upstream ? upstream : "", pw__strlen(upstream), hb, hl, body ? body : "",
                                        body ? body_len : 0, tb, tl, timeout_ms, &t);
    free(hb);
    free(tb);
    if (st == PW_OK) pw__remember(&pw__http_calls, t);
    if (token) *token = st == PW_OK ? t : 0;
    return st;
}

pw_status pw_grpc_call(const char *upstream, const char *service, const char *method, const pw_header *metadata,
                       size_t n_metadata, const char *message, size_t message_len, uint32_t timeout_ms,
                       uint32_t *token) {
    char *mb;
    size_t ml;
    pw_status st = pw_serialize_pairs(metadata, n_metadata, &mb, &ml);
    if (st != PW_OK) return st;
    uint32_t t = 0;
    st = (pw_status)proxy_grpc_call(upstream ? upstream : "", pw__strlen(upstream), service ? service : "",
                                    pw__strlen(service), method ? method : "", pw__strlen(method), mb, ml,
                                    message ? message : "", message ? message_len : 0, timeout_ms, &t);
    free(mb);
    if (st == PW_OK) pw__remember(&pw__grpc_calls, t);
    if (token) *token = st == PW_OK ? t : 0;
    return st;
}

pw_status pw_grpc_stream(const char *upstream, const char *service, const char *method, const pw_header *metadata,
                         size_t n_metadata, uint32_t *token) {
    char *mb;
    size_t ml;
    pw_status st = pw_serialize_pairs(metadata, n_metadata, &mb, &ml);
    if (st != PW_OK) return st;
    uint32_t t = 0;
    st = (pw_status)proxy_grpc_stream(upstream ? upstream : "", pw__strlen(upstream), service ? service : "",
                                      pw__strlen(service), method ? method : "", pw__strlen(method), mb, ml, &t);
    free(mb);
    if (st == PW_OK) pw__remember(&pw__grpc_streams, t);
    if (token) *token = st == PW_OK ? t : 0;
    return st;
}

pw_status pw_grpc_send(uint32_t token, const char *message, size_t message_len, bool end_stream) {
    return (pw_status)proxy_grpc_send(token, message ? message : "", message ? message_len : 0, end_stream);
}

/* A cancelled call gets no further callbacks (cpp-host), so forget it now. */
pw_status pw_grpc_cancel(uint32_t token) {
    pw_status st = (pw_status)proxy_grpc_cancel(token);
    pw__map_del(&pw__grpc_calls, token, NULL);
    pw__map_del(&pw__grpc_streams, token, NULL);
    return st;
}

pw_status pw_grpc_close(uint32_t token) { return (pw_status)proxy_grpc_close(token); }

pw_status pw_get_status(uint32_t *code, char **message, size_t *len) {
    uint32_t c = 0;
    char *got = NULL;
    size_t got_len = 0;
    uint32_t st = proxy_get_status(&c, &got, &got_len);
    if (code) *code = st == PW_OK ? c : 0;
    return pw__take(st, message, len, got, got_len);
}

/* ======================================================================== */
/* Wrappers: properties (path segments joined by NULs, as hosts split them)  */
/* ======================================================================== */

static char *pw__join_path(const char *const *path, size_t n, size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += pw__strlen(path[i]) + (i ? 1 : 0);
    char *buf = (char *)malloc(total + 1), *p = buf;
    if (!buf) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (i) *p++ = 0;
        size_t l = pw__strlen(path[i]);
        if (l) memcpy(p, path[i], l);
        p += l;
    }
    *p = 0;
    *len = total;
    return buf;
}

pw_status pw_get_property(const char *const *path, size_t n, char **value, size_t *len) {
    size_t pl;
    char *joined = (path || !n) ? pw__join_path(path, n, &pl) : NULL;
    if (!joined) return pw__take(PW_BAD_ARGUMENT, value, len, NULL, 0);
    char *got = NULL;
    size_t got_len = 0;
    uint32_t st = proxy_get_property(joined, pl, &got, &got_len);
    free(joined);
    return pw__take(st, value, len, got, got_len);
}

pw_status pw_set_property(const char *const *path, size_t n, const char *value, size_t len) {
    size_t pl;
    char *joined = (path || !n) ? pw__join_path(path, n, &pl) : NULL;
    if (!joined) return PW_BAD_ARGUMENT;
    pw_status st = (pw_status)proxy_set_property(joined, pl, value ? value : "", value ? len : 0);
    free(joined);
    return st;
}

/* "a.b.c" -> "a\0b\0c": the same bytes pw__join_path would produce. */
static pw_status pw__get_dotted(const char *dotted, char **value, size_t *len) {
    if (!dotted) return pw__take(PW_BAD_ARGUMENT, value, len, NULL, 0);
    size_t pl = strlen(dotted);
    char *path = (char *)malloc(pl + 1);
    if (!path) return pw__take(PW_INTERNAL_FAILURE, value, len, NULL, 0);
    for (size_t i = 0; i <= pl; i++) path[i] = dotted[i] == '.' ? 0 : dotted[i];
    char *got = NULL;
    size_t got_len = 0;
    uint32_t st = proxy_get_property(path, pl, &got, &got_len);
    free(path);
    return pw__take(st, value, len, got, got_len);
}

char *pw_get_property_str(const char *dotted_path) {
    char *v = NULL;
    pw__get_dotted(dotted_path, &v, NULL);
    return v;
}

pw_status pw_get_property_int(const char *dotted_path, int64_t *out) {
    char *v = NULL;
    size_t len = 0;
    pw_status st = pw__get_dotted(dotted_path, &v, &len);
    if (st == PW_OK) {
        if (len == 8) {
            uint64_t x = 0;
            for (int i = 7; i >= 0; i--) x = (x << 8) | (unsigned char)v[i];
            if (out) *out = (int64_t)x;
        } else {
            st = PW_SERIALIZATION_FAILURE;
        }
    }
    free(v);
    return st;
}

/* ======================================================================== */
/* Wrappers: shared data and queues, metrics, contexts, FFI                  */
/* ======================================================================== */

pw_status pw_get_shared_data(const char *key, char **value, size_t *len, uint32_t *cas) {
    char *got = NULL;
    size_t got_len = 0;
    uint32_t c = 0;
    uint32_t st = proxy_get_shared_data(key ? key : "", pw__strlen(key), &got, &got_len, &c);
    if (cas) *cas = st == PW_OK ? c : 0;
    return pw__take(st, value, len, got, got_len);
}

pw_status pw_set_shared_data(const char *key, const char *value, size_t len, uint32_t cas) {
    return (pw_status)proxy_set_shared_data(key ? key : "", pw__strlen(key), value ? value : "", value ? len : 0,
                                            cas);
}

pw_status pw_register_shared_queue(const char *name, uint32_t *queue_id) {
    uint32_t q = 0;
    pw_status st = (pw_status)proxy_register_shared_queue(name ? name : "", pw__strlen(name), &q);
    if (queue_id) *queue_id = st == PW_OK ? q : 0;
    return st;
}

pw_status pw_resolve_shared_queue(const char *vm_id, const char *name, uint32_t *queue_id) {
    uint32_t q = 0;
    pw_status st = (pw_status)proxy_resolve_shared_queue(vm_id ? vm_id : "", pw__strlen(vm_id), name ? name : "",
                                                         pw__strlen(name), &q);
    if (queue_id) *queue_id = st == PW_OK ? q : 0;
    return st;
}

pw_status pw_enqueue_shared_queue(uint32_t queue_id, const char *data, size_t len) {
    return (pw_status)proxy_enqueue_shared_queue(queue_id, data ? data : "", data ? len : 0);
}

pw_status pw_dequeue_shared_queue(uint32_t queue_id, char **data, size_t *len) {
    char *got = NULL;
    size_t got_len = 0;
    uint32_t st = proxy_dequeue_shared_queue(queue_id, &got, &got_len);
    return pw__take(st, data, len, got, got_len);
}

pw_status pw_define_metric(pw_metric_type type, const char *name, uint32_t *metric_id) {
    uint32_t id = 0;
    pw_status st = (pw_status)proxy_define_metric((uint32_t)type, name ? name : "", pw__strlen(name), &id);
    if (metric_id) *metric_id = st == PW_OK ? id : 0;
    return st;
}

pw_status pw_increment_metric(uint32_t metric_id, int64_t delta) {
    return (pw_status)proxy_increment_metric(metric_id, delta);
}

pw_status pw_record_metric(uint32_t metric_id, uint64_t value) {
    return (pw_status)proxy_record_metric(metric_id, value);
}

pw_status pw_get_metric(uint32_t metric_id, uint64_t *value) {
    uint64_t v = 0;
    pw_status st = (pw_status)proxy_get_metric(metric_id, &v);
    if (value) *value = st == PW_OK ? v : 0;
    return st;
}

pw_status pw_set_effective_context(uint32_t context_id) {
    pw_status st = (pw_status)proxy_set_effective_context(context_id);
    if (st == PW_OK) pw__current_id = context_id;
    return st;
}

pw_status pw_done(void) { return (pw_status)proxy_done(); }

pw_status pw_call_foreign_function(const char *name, const char *args, size_t args_len, char **result,
                                   size_t *result_len) {
    char *got = NULL;
    size_t got_len = 0;
    uint32_t st = proxy_call_foreign_function(name ? name : "", pw__strlen(name), args ? args : "",
                                              args ? args_len : 0, &got, &got_len);
    return pw__take(st, result, result_len, got, got_len);
}

/* ======================================================================== */
/* JSON reader (RFC 8259). pw_json_parse validates once; navigation re-scans */
/* with the same validating scanner, so a hand-made pw_json can make a call */
/* fail but never read outside [p, p+len).                                  */
/* ======================================================================== */

#define PW__JSON_MAX_DEPTH 64

static const char *pw__ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int pw__hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* p at the opening quote; returns one past the closing quote, or NULL. */
static const char *pw__json_scan_string(const char *p, const char *e) {
    if (p >= e || *p != '"') return NULL;
    for (p++; p < e; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            if (++p >= e) return NULL;
            switch (*p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
            case 'u':
                if (e - p < 5) return NULL;
                for (int i = 1; i <= 4; i++)
                    if (pw__hex(p[i]) < 0) return NULL;
                p += 4;
                break;
            default: return NULL;
            }
        }
    }
    return NULL;
}

static const char *pw__json_scan_number(const char *p, const char *e) {
    if (p < e && *p == '-') p++;
    if (p >= e) return NULL;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') while (p < e && *p >= '0' && *p <= '9') p++;
    else return NULL;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    return p;
}

static const char *pw__json_scan_lit(const char *p, const char *e, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(e - p) < n || memcmp(p, lit, n) != 0) return NULL;
    return p + n;
}

/* p at the first byte of a value (no leading space); returns its end or NULL. */
static const char *pw__json_scan(const char *p, const char *e, int depth) {
    if (p >= e) return NULL;
    switch (*p) {
    case '"': return pw__json_scan_string(p, e);
    case 't': return pw__json_scan_lit(p, e, "true");
    case 'f': return pw__json_scan_lit(p, e, "false");
    case 'n': return pw__json_scan_lit(p, e, "null");
    case '[':
    case '{': {
        if (depth >= PW__JSON_MAX_DEPTH) return NULL;
        char close = *p == '[' ? ']' : '}';
        bool obj = *p == '{';
        p = pw__ws(p + 1, e);
        if (p < e && *p == close) return p + 1;
        for (;;) {
            if (obj) {
                p = pw__json_scan_string(p, e);
                if (!p) return NULL;
                p = pw__ws(p, e);
                if (p >= e || *p != ':') return NULL;
                p = pw__ws(p + 1, e);
            }
            p = pw__json_scan(p, e, depth + 1);
            if (!p) return NULL;
            p = pw__ws(p, e);
            if (p >= e) return NULL;
            if (*p == close) return p + 1;
            if (*p != ',') return NULL;
            p = pw__ws(p + 1, e);
        }
    }
    default: return pw__json_scan_number(p, e);
    }
}

bool pw_json_parse(const char *text, size_t len, pw_json *root) {
    if (!text || !root) return false;
    const char *e = text + len, *p = pw__ws(text, e);
    const char *end = pw__json_scan(p, e, 0);
    if (!end || pw__ws(end, e) != e) return false;
    root->p = p;
    root->len = (size_t)(end - p);
    return true;
}

pw_json_type pw_json_typeof(pw_json v) {
    if (!v.p || v.len == 0) return PW_JSON_INVALID;
    switch (v.p[0]) {
    case '{': return PW_JSON_OBJECT;
    case '[': return PW_JSON_ARRAY;
    case '"': return PW_JSON_STRING;
    case 't': case 'f': return PW_JSON_BOOL;
    case 'n': return PW_JSON_NULL;
    default: return (v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9')) ? PW_JSON_NUMBER : PW_JSON_INVALID;
    }
}

bool pw_json_next(pw_json c, size_t *pos, pw_json *key, pw_json *value) {
    if (!pos || !c.p || c.len < 2 || (c.p[0] != '{' && c.p[0] != '[')) return false;
    bool obj = c.p[0] == '{';
    const char *b = c.p, *e = c.p + c.len;
    if (*pos >= c.len) return false;
    const char *p = pw__ws(b + (*pos ? *pos : 1), e);
    if (p < e && *p == ',' && *pos) p = pw__ws(p + 1, e);
    if (p >= e || *p == '}' || *p == ']') return false;
    pw_json k = {NULL, 0};
    if (obj) {
        const char *ke = pw__json_scan_string(p, e);
        if (!ke) return false;
        k.p = p;
        k.len = (size_t)(ke - p);
        p = pw__ws(ke, e);
        if (p >= e || *p != ':') return false;
        p = pw__ws(p + 1, e);
    }
    const char *ve = pw__json_scan(p, e, 1);
    if (!ve) return false;
    if (key) *key = k;
    if (value) {
        value->p = p;
        value->len = (size_t)(ve - p);
    }
    *pos = (size_t)(ve - b);
    return true;
}

size_t pw_json_count(pw_json v) {
    size_t pos = 0, n = 0;
    while (pw_json_next(v, &pos, NULL, NULL)) n++;
    return n;
}

bool pw_json_index(pw_json a, size_t i, pw_json *out) {
    if (pw_json_typeof(a) != PW_JSON_ARRAY) return false;
    size_t pos = 0;
    pw_json v;
    for (size_t n = 0; pw_json_next(a, &pos, NULL, &v); n++)
        if (n == i) {
            if (out) *out = v;
            return true;
        }
    return false;
}

/* Decode the string value at v (quotes included) into out[0..cap), returning
 * the decoded length; (size_t)-1 if v is not a valid string. */
static size_t pw__json_unescape(pw_json v, char *out, size_t cap) {
    if (pw_json_typeof(v) != PW_JSON_STRING) return (size_t)-1;
    const char *p = v.p, *e = v.p + v.len;
    if (pw__json_scan_string(p, e) != e) return (size_t)-1;
    e--; /* closing quote */
    size_t n = 0;
#define PW__PUT(ch) do { if (n < cap) out[n] = (char)(ch); n++; } while (0)
    for (p++; p < e; p++) {
        if (*p != '\\') {
            PW__PUT(*p);
            continue;
        }
        p++;
        switch (*p) {
        case 'b': PW__PUT('\b'); break;
        case 'f': PW__PUT('\f'); break;
        case 'n': PW__PUT('\n'); break;
        case 'r': PW__PUT('\r'); break;
        case 't': PW__PUT('\t'); break;
        case 'u': {
            uint32_t cp = (uint32_t)(pw__hex(p[1]) << 12 | pw__hex(p[2]) << 8 | pw__hex(p[3]) << 4 | pw__hex(p[4]));
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && e - p >= 7 && p[1] == '\\' && p[2] == 'u') {
                uint32_t lo = (uint32_t)(pw__hex(p[3]) << 12 | pw__hex(p[4]) << 8 | pw__hex(p[5]) << 4 | pw__hex(p[6]));
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* a lone surrogate is not a character */
            if (cp < 0x80) {
                PW__PUT(cp);
            } else if (cp < 0x800) {
                PW__PUT(0xC0 | (cp >> 6));
                PW__PUT(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                PW__PUT(0xE0 | (cp >> 12));
                PW__PUT(0x80 | ((cp >> 6) & 0x3F));
                PW__PUT(0x80 | (cp & 0x3F));
            } else {
                PW__PUT(0xF0 | (cp >> 18));
                PW__PUT(0x80 | ((cp >> 12) & 0x3F));
                PW__PUT(0x80 | ((cp >> 6) & 0x3F));
                PW__PUT(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: PW__PUT(*p); break; /* " \ / */
        }
    }
#undef PW__PUT
    return n;
}

bool pw_json_string(pw_json v, char *buf, size_t cap, size_t *len) {
    size_t n = pw__json_unescape(v, buf, cap);
    if (n == (size_t)-1) return false;
    if (len) *len = n;
    if (!buf || n >= cap) {
        if (buf && cap) buf[0] = 0;
        return false;
    }
    buf[n] = 0;
    return true;
}

char *pw_json_strdup(pw_json v) {
    size_t n = pw__json_unescape(v, NULL, 0);
    if (n == (size_t)-1) return NULL;
    char *s = (char *)malloc(n + 1);
    if (!s) return NULL;
    pw__json_unescape(v, s, n);
    s[n] = 0;
    return s;
}

/* Compare without allocating when there is nothing to unescape (the usual
 * key); otherwise decode to the heap. */
static bool pw__json_streq_n(pw_json v, const char *s, size_t n) {
    if (pw_json_typeof(v) != PW_JSON_STRING || v.len < 2) return false;
    if (!memchr(v.p, '\\', v.len)) return v.len - 2 == n && memcmp(v.p + 1, s, n) == 0;
    size_t dn = pw__json_unescape(v, NULL, 0);
    if (dn != n) return false;
    char *d = (char *)malloc(dn + 1);
    if (!d) return false;
    pw__json_unescape(v, d, dn);
    bool eq = memcmp(d, s, n) == 0;
    free(d);
    return eq;
}

bool pw_json_streq(pw_json v, const char *s) { return s && pw__json_streq_n(v, s, strlen(s)); }

static bool pw__json_get_n(pw_json o, const char *key, size_t klen, pw_json *out) {
    if (pw_json_typeof(o) != PW_JSON_OBJECT) return false;
    size_t pos = 0;
    pw_json k, v;
    while (pw_json_next(o, &pos, &k, &v))
        if (pw__json_streq_n(k, key, klen)) {
            if (out) *out = v;
            return true;
        }
    return false;
}

bool pw_json_get(pw_json o, const char *key, pw_json *out) { return key && pw__json_get_n(o, key, strlen(key), out); }

bool pw_json_find(pw_json root, const char *path, pw_json *out) {
    if (!path) return false;
    pw_json cur = root;
    const char *s = path;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        pw_json next;
        bool found = false;
        if (pw_json_typeof(cur) == PW_JSON_ARRAY) {
            size_t idx = 0;
            bool digits = n > 0 && n < 10;
            for (size_t i = 0; i < n && digits; i++) {
                if (s[i] < '0' || s[i] > '9') digits = false;
                else idx = idx * 10 + (size_t)(s[i] - '0');
            }
            found = digits && pw_json_index(cur, idx, &next);
        } else {
            found = pw__json_get_n(cur, s, n, &next);
        }
        if (!found) return false;
        cur = next;
        if (!dot) break;
        s = dot + 1;
    }
    if (out) *out = cur;
    return true;
}

bool pw_json_bool(pw_json v, bool *out) {
    if (v.len == 4 && memcmp(v.p, "true", 4) == 0) {
        if (out) *out = true;
        return true;
    }
    if (v.len == 5 && memcmp(v.p, "false", 5) == 0) {
        if (out) *out = false;
        return true;
    }
    return false;
}

bool pw_json_int(pw_json v, int64_t *out) {
    if (pw_json_typeof(v) != PW_JSON_NUMBER || pw__json_scan_number(v.p, v.p + v.len) != v.p + v.len) return false;
    const char *p = v.p, *e = v.p + v.len;
    bool neg = *p == '-';
    if (neg) p++;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, x = 0;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9') return false; /* a fraction or exponent */
        uint64_t d = (uint64_t)(*p - '0');
        if (x > (limit - d) / 10) return false;
        x = x * 10 + d;
    }
    if (out) *out = neg ? (int64_t)(0 - x) : (int64_t)x;
    return true;
}

bool pw_json_number(pw_json v, double *out) {
    if (pw_json_typeof(v) != PW_JSON_NUMBER || pw__json_scan_number(v.p, v.p + v.len) != v.p + v.len) return false;
    /* strtod needs a terminated copy; JSON numbers are ASCII and a valid one
     * parses completely. */
    char small[64], *buf = v.len < sizeof small ? small : (char *)malloc(v.len + 1);
    if (!buf) return false;
    memcpy(buf, v.p, v.len);
    buf[v.len] = 0;
    double d = strtod(buf, NULL);
    if (buf != small) free(buf);
    if (out) *out = d;
    return true;
}

char *pw_json_get_string(pw_json root, const char *path) {
    pw_json v;
    return pw_json_find(root, path, &v) ? pw_json_strdup(v) : NULL;
}

bool pw_json_get_int(pw_json root, const char *path, int64_t *out) {
    pw_json v;
    return pw_json_find(root, path, &v) && pw_json_int(v, out);
}

bool pw_json_get_number(pw_json root, const char *path, double *out) {
    pw_json v;
    return pw_json_find(root, path, &v) && pw_json_number(v, out);
}

bool pw_json_get_bool(pw_json root, const char *path, bool *out) {
    pw_json v;
    return pw_json_find(root, path, &v) && pw_json_bool(v, out);
}

/* ======================================================================== */
/* Envoy's StringMatcher from JSON (see proxy_wasm.h, pw_match.h)           */
/* ======================================================================== */

bool pw_json_string_matcher(pw_json spec, const char *field, pw_string_matcher *out) {
    static const struct { const char *key; pw_match_kind kind; } kinds[] = {
        {"exact", PW_MATCH_EXACT},       {"prefix", PW_MATCH_PREFIX}, {"suffix", PW_MATCH_SUFFIX},
        {"contains", PW_MATCH_CONTAINS}, {"regex", PW_MATCH_REGEX},   {"safe_regex.regex", PW_MATCH_REGEX}};
    const char *key = NULL;
    pw_json v = spec;
    pw_match_kind kind = PW_MATCH_EXACT;
    bool ignore_case = false;
    memset(out, 0, sizeof *out);
    if (pw_json_typeof(spec) != PW_JSON_STRING) {
        for (size_t k = 0; !key && k < sizeof kinds / sizeof kinds[0]; k++)
            if (pw_json_find(spec, kinds[k].key, &v) && pw_json_typeof(v) == PW_JSON_STRING)
                key = kinds[k].key, kind = kinds[k].kind;
        if (!key) {
            pw_logf(PW_LOG_ERROR, "%s: needs one of exact, prefix, suffix, contains, safe_regex.regex", field);
            return false;
        }
        pw_json_get_bool(spec, "ignore_case", &ignore_case);
    }
    size_t len = 0;
    pw_json_string(v, NULL, 0, &len);
    char *value = (char *)malloc(len + 1), err[160];
    bool ok = value && pw_json_string(v, value, len + 1, NULL) &&
              pw_string_matcher_init(out, kind, value, len, ignore_case, err, sizeof err);
    if (!ok)
        pw_logf(PW_LOG_ERROR, "%s%s%s: %s (pattern \"%s\")", field, key ? "." : "", key ? key : "",
                value ? err : "out of memory", value ? value : "");
    free(value);
    return ok;
}
