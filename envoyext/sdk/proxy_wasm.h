/*
 * proxy_wasm.h - envoyext's C SDK for proxy-wasm filters (ABI v0.2.1).
 *
 * Written from the proxy-wasm ABI specification v0.2.1
 * (github.com/proxy-wasm/spec, abi-versions/v0.2.1/README.md; "spec" below)
 * and checked against how proxy-wasm-cpp-host, the host Envoy embeds, calls a
 * module.
 *
 * HOW A FILTER LOOKS
 *
 *     #include "proxy_wasm.h"
 *
 *     pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
 *         pw_add_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-hello", "world");
 *         return PW_CONTINUE;
 *     }
 *
 * That is all. The SDK runtime (proxy_wasm.c, which `envoyext build` compiles
 * alongside every filter) defines every proxy_on_* export the host calls, keeps
 * one pw_root per plugin (root) context and one pw_ctx per HTTP stream or TCP
 * connection, and calls the pw_on_* hooks below. Every hook is optional: the
 * SDK has a weak default for each (continue, succeed, do nothing), so you
 * define only the ones you need, with exactly the signatures declared here.
 * `envoyext build` leaves out the proxy_on_* export of each stream hook your
 * sources never mention (request/response headers, body, trailers, log, done,
 * TCP data and close), so the host does not call into the VM for it at all:
 * each such call costs about as much as a small hook's work.
 * Do not define proxy_on_* functions yourself; names starting with pw__ are
 * the SDK's own.
 *
 * CONTEXTS
 *
 * Host functions act on "the current context": the one the host is calling
 * into (spec, "Callbacks exposed by the Wasm module": every callback carries
 * it). So the wrappers take no context argument. pw_ctx and pw_root exist to
 * carry your own state: set `ctx->data` in pw_on_create() (or lazily) and free
 * it in pw_on_delete(); set `root->data` in pw_on_configure() and free it in
 * pw_on_root_delete(). The SDK never touches `data`.
 *
 * MEMORY: WHO FREES WHAT
 *
 * Everything a wrapper hands back through a `char **` out-parameter (header
 * values, bodies, properties, shared data, queue items, ...) was allocated in
 * this module's heap by the host, through the module's `malloc` export (spec,
 * "Memory management"). It is yours: release it with free() (pw_free() is the
 * same). On PW_OK the pointer is never NULL (an empty value is a malloc'd "");
 * on any other status it is set to NULL, so `free(p)` is always safe.
 * The SDK's allocator reserves one extra byte and zeroes it, so every such
 * buffer is also NUL-terminated: a header value can be used as a C string
 * directly. Binary data may contain NULs of its own: trust the length.
 *
 * Pointers passed *into* hooks (configuration text, foreign-function
 * arguments) belong to the SDK and are valid only during the call: copy or
 * parse what you need before returning.
 *
 * Strings are counted, not NUL-terminated, on the wire; the `_n` wrappers take
 * explicit lengths and the plain ones take C strings.
 */
#ifndef ENVOYEXT_PROXY_WASM_H
#define ENVOYEXT_PROXY_WASM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "pw_match.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PW_SDK_VERSION "0.1.0"

/* ------------------------------------------------------------------------ */
/* ABI types (spec, "Types"). All are 32-bit on the wire.                    */
/* ------------------------------------------------------------------------ */

/* proxy_status_t: what every host function returns. */
typedef enum {
    PW_OK = 0,
    PW_NOT_FOUND = 1,
    PW_BAD_ARGUMENT = 2,
    PW_SERIALIZATION_FAILURE = 3,
    PW_PARSE_FAILURE = 4,
    PW_INVALID_MEMORY_ACCESS = 6,
    PW_EMPTY = 7,
    PW_CAS_MISMATCH = 8,
    PW_INTERNAL_FAILURE = 10,
    PW_UNIMPLEMENTED = 12,
} pw_status;

/* proxy_action_t: what stream callbacks return. Envoy turns PW_PAUSE from a
 * headers callback into "stop all iteration" (request body is not forwarded
 * either) until pw_continue_stream(); from a body callback it buffers. */
typedef enum {
    PW_CONTINUE = 0,
    PW_PAUSE = 1,
} pw_action;

/* proxy_log_level_t */
typedef enum {
    PW_LOG_TRACE = 0,
    PW_LOG_DEBUG = 1,
    PW_LOG_INFO = 2,
    PW_LOG_WARN = 3,
    PW_LOG_ERROR = 4,
    PW_LOG_CRITICAL = 5,
} pw_log_level;

/* proxy_buffer_type_t. Each is readable only in some callbacks (spec,
 * "Buffers"): request/response body in the body callbacks, plugin
 * configuration in pw_on_configure, and so on. */
typedef enum {
    PW_BUFFER_HTTP_REQUEST_BODY = 0,
    PW_BUFFER_HTTP_RESPONSE_BODY = 1,
    PW_BUFFER_DOWNSTREAM_DATA = 2,
    PW_BUFFER_UPSTREAM_DATA = 3,
    PW_BUFFER_HTTP_CALL_RESPONSE_BODY = 4,
    PW_BUFFER_GRPC_CALL_MESSAGE = 5,
    PW_BUFFER_VM_CONFIGURATION = 6,
    PW_BUFFER_PLUGIN_CONFIGURATION = 7,
    PW_BUFFER_FOREIGN_FUNCTION_ARGUMENTS = 8,
} pw_buffer_type;

/* proxy_map_type_t (spec, "HTTP fields"). */
typedef enum {
    PW_MAP_HTTP_REQUEST_HEADERS = 0,
    PW_MAP_HTTP_REQUEST_TRAILERS = 1,
    PW_MAP_HTTP_RESPONSE_HEADERS = 2,
    PW_MAP_HTTP_RESPONSE_TRAILERS = 3,
    PW_MAP_GRPC_CALL_INITIAL_METADATA = 4,
    PW_MAP_GRPC_CALL_TRAILING_METADATA = 5,
    PW_MAP_HTTP_CALL_RESPONSE_HEADERS = 6,
    PW_MAP_HTTP_CALL_RESPONSE_TRAILERS = 7,
} pw_map_type;

/* proxy_peer_type_t: who closed a TCP connection. */
typedef enum {
    PW_PEER_UNKNOWN = 0,
    PW_PEER_LOCAL = 1,
    PW_PEER_REMOTE = 2,
} pw_peer_type;

/* proxy_stream_type_t: what pw_continue_stream()/pw_close_stream() act on. */
typedef enum {
    PW_STREAM_HTTP_REQUEST = 0,
    PW_STREAM_HTTP_RESPONSE = 1,
    PW_STREAM_DOWNSTREAM = 2,
    PW_STREAM_UPSTREAM = 3,
} pw_stream_type;

/* proxy_metric_type_t */
typedef enum {
    PW_METRIC_COUNTER = 0,
    PW_METRIC_GAUGE = 1,
    PW_METRIC_HISTOGRAM = 2,
} pw_metric_type;

/* grpc_status for pw_send_local_response() when the reply is not gRPC: the
 * C++/Rust SDKs send -1 ("invalid code"), which Envoy maps to "no grpc-status". */
#define PW_GRPC_STATUS_NONE (-1)

/* ------------------------------------------------------------------------ */
/* Contexts                                                                  */
/* ------------------------------------------------------------------------ */

/* A plugin ("root") context: one per plugin configuration in this VM
 * (spec, "Terminology"). Lives from pw_on_root_create to pw_on_root_delete. */
typedef struct pw_root {
    uint32_t id;  /* the host's context id */
    void *data;   /* yours */
} pw_root;

/* A stream context: one HTTP request/response pair or one TCP connection.
 * Lives from pw_on_create to pw_on_delete. */
typedef struct pw_ctx {
    uint32_t id;    /* the host's context id */
    pw_root *root;  /* the plugin it belongs to; never NULL */
    void *data;     /* yours */
} pw_ctx;

/* The live stream context with this id, or NULL if it is gone (deleted).
 * Keep ids, not pointers, across callbacks you do not control (queue items,
 * timers) and look them up here. */
pw_ctx *pw_find_ctx(uint32_t context_id);
/* The live plugin context with this id, or NULL. */
pw_root *pw_find_root(uint32_t context_id);

/* ------------------------------------------------------------------------ */
/* Hooks you may define (all optional; the defaults are shown in brackets).  */
/* ------------------------------------------------------------------------ */

/* Plugin lifecycle. `config` is NUL-terminated and valid during the call. */
bool pw_on_vm_start(pw_root *root, const char *vm_config, size_t len);   /* [true] */
void pw_on_root_create(pw_root *root);                                   /* [] */
bool pw_on_configure(pw_root *root, const char *config, size_t len);     /* [true]; false rejects the config */
void pw_on_tick(pw_root *root);                                          /* [] see pw_set_tick_period_ms */
void pw_on_queue_ready(pw_root *root, uint32_t queue_id);                /* [] */
void pw_on_foreign_function(pw_root *root, uint32_t function_id,
                            const char *args, size_t len);               /* [] */
bool pw_on_root_done(pw_root *root);   /* [true]; false = "call pw_done() later" (spec, proxy_on_done) */
void pw_on_root_delete(pw_root *root); /* [] free root->data here */

/* Stream lifecycle. The host calls done, log and delete once each at the end
 * (the order of log relative to done varies by host: do final bookkeeping in
 * pw_on_log, and free memory only in pw_on_delete). */
void pw_on_create(pw_ctx *ctx);        /* [] */
bool pw_on_done(pw_ctx *ctx);          /* [true] */
void pw_on_log(pw_ctx *ctx);           /* [] all header maps are readable here */
void pw_on_delete(pw_ctx *ctx);        /* [] free ctx->data here */

/* HTTP. `body_size` is the total buffered so far (spec, proxy_on_request_body). */
pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream);   /* [CONTINUE] */
pw_action pw_on_request_body(pw_ctx *ctx, size_t body_size, bool end_of_stream);          /* [CONTINUE] */
pw_action pw_on_request_trailers(pw_ctx *ctx, uint32_t num_trailers);                     /* [CONTINUE] */
pw_action pw_on_response_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream);  /* [CONTINUE] */
pw_action pw_on_response_body(pw_ctx *ctx, size_t body_size, bool end_of_stream);         /* [CONTINUE] */
pw_action pw_on_response_trailers(pw_ctx *ctx, uint32_t num_trailers);                    /* [CONTINUE] */

/* TCP. */
pw_action pw_on_new_connection(pw_ctx *ctx);                                         /* [CONTINUE] */
pw_action pw_on_downstream_data(pw_ctx *ctx, size_t data_size, bool end_of_stream);  /* [CONTINUE] */
pw_action pw_on_upstream_data(pw_ctx *ctx, size_t data_size, bool end_of_stream);    /* [CONTINUE] */
void pw_on_downstream_connection_close(pw_ctx *ctx, pw_peer_type peer);              /* [] */
void pw_on_upstream_connection_close(pw_ctx *ctx, pw_peer_type peer);                /* [] */

/* Responses to pw_http_call()/pw_grpc_*(). The host delivers them to the plugin
 * context (proxy-wasm-cpp-host issues every call from the root context), so
 * the SDK remembers which stream made each call: `ctx` is that stream, already
 * made the effective context so pw_continue_stream() and header calls act on
 * it, or NULL if the call was made from the plugin context or the stream has
 * since been deleted. num_headers == 0 means the call failed (spec,
 * proxy_on_http_call_response). Read the response with
 * PW_MAP_HTTP_CALL_RESPONSE_HEADERS/_TRAILERS and PW_BUFFER_HTTP_CALL_RESPONSE_BODY
 * (Envoy serves those from the plugin context, so they stay readable after the
 * switch); pw_get_status() gives the failure reason. */
void pw_on_http_call_response(pw_root *root, pw_ctx *ctx, uint32_t token, uint32_t num_headers,
                              size_t body_size, uint32_t num_trailers);                        /* [] */
void pw_on_grpc_receive_initial_metadata(pw_root *root, pw_ctx *ctx, uint32_t token,
                                         uint32_t num_elements);                              /* [] */
void pw_on_grpc_receive(pw_root *root, pw_ctx *ctx, uint32_t token, size_t message_size);    /* [] */
void pw_on_grpc_receive_trailing_metadata(pw_root *root, pw_ctx *ctx, uint32_t token,
                                          uint32_t num_elements);                             /* [] */
void pw_on_grpc_close(pw_root *root, pw_ctx *ctx, uint32_t token, uint32_t grpc_status);     /* [] */

/* ------------------------------------------------------------------------ */
/* Errors, memory                                                            */
/* ------------------------------------------------------------------------ */

/* "OK", "NOT_FOUND", ... for logs. */
const char *pw_status_str(pw_status status);
/* Same as free(); for buffers the wrappers return. */
void pw_free(void *p);

/* ------------------------------------------------------------------------ */
/* Logging and time                                                          */
/* ------------------------------------------------------------------------ */

pw_status pw_log(pw_log_level level, const char *message);
pw_status pw_log_n(pw_log_level level, const char *message, size_t len);
/* printf-style; formats only if the host would keep the line. Pulls in
 * vsnprintf (~20 KB of wasm) the first time a filter uses it. */
pw_status pw_logf(pw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
pw_status pw_get_log_level(pw_log_level *level);
/* True when a line at `level` would be kept by the host. */
bool pw_log_enabled(pw_log_level level);

/* Wall-clock time in ns since the epoch; hosts may freeze it per callback. */
pw_status pw_get_current_time_ns(uint64_t *ns);
uint64_t pw_now_ns(void); /* 0 if the host refuses */
/* Call pw_on_tick(root) of the current plugin every `ms`; 0 stops it. */
pw_status pw_set_tick_period_ms(uint32_t ms);

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */
/* ------------------------------------------------------------------------ */

/* The plugin configuration bytes (only readable during pw_on_configure; the
 * SDK already passes them to it) / the VM configuration (pw_on_vm_start). */
pw_status pw_get_plugin_config(char **data, size_t *len);
pw_status pw_get_vm_config(char **data, size_t *len);

/* ------------------------------------------------------------------------ */
/* Buffers (bodies, TCP data, call responses; spec "Buffers")                */
/* ------------------------------------------------------------------------ */

/* Up to `max` bytes from `start`. Pass SIZE_MAX for "all of it". */
pw_status pw_get_buffer(pw_buffer_type type, size_t start, size_t max, char **data, size_t *len);
/* Replace `size` bytes at `start` with data (spec, proxy_set_buffer_bytes).
 * Envoy implements only start == 0 (drop `size` bytes then prepend) and
 * start >= buffer length (append); anything else returns PW_BAD_ARGUMENT. */
pw_status pw_set_buffer(pw_buffer_type type, size_t start, size_t size, const char *data, size_t len);
pw_status pw_get_buffer_size(pw_buffer_type type, size_t *size);
/* Whole-buffer helpers built on the two above. */
pw_status pw_replace_buffer(pw_buffer_type type, const char *data, size_t len);
pw_status pw_append_buffer(pw_buffer_type type, const char *data, size_t len);
pw_status pw_prepend_buffer(pw_buffer_type type, const char *data, size_t len);

/* ------------------------------------------------------------------------ */
/* Header maps (HTTP headers/trailers, gRPC metadata; spec "HTTP fields")    */
/* ------------------------------------------------------------------------ */

/* One header. In arrays you pass in, a length of 0 means "strlen() it", so
 * {"x-a", 0, "1", 0} (PW_HEADER("x-a", "1")) just works; a NULL value is "".
 * In pw_headers the SDK returns, lengths are exact and both strings are also
 * NUL-terminated (the wire format terminates them; spec "Serialization"). */
typedef struct pw_header {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} pw_header;
#define PW_HEADER(key, value) { (key), 0, (value), 0 }

typedef struct pw_headers {
    pw_header *items;
    size_t count;
    char *raw; /* the serialized buffer items point into, if owned */
} pw_headers;

/* Value of `name` (first one if repeated) as a malloc'd C string; NULL if
 * absent or unreadable here. free() it. */
char *pw_get_header(pw_map_type map, const char *name);
pw_status pw_get_header_n(pw_map_type map, const char *name, size_t name_len, char **value, size_t *len);
pw_status pw_add_header(pw_map_type map, const char *name, const char *value);
pw_status pw_add_header_n(pw_map_type map, const char *name, size_t name_len, const char *value, size_t value_len);
/* Add or replace (spec, proxy_replace_header_map_value). */
pw_status pw_replace_header(pw_map_type map, const char *name, const char *value);
pw_status pw_replace_header_n(pw_map_type map, const char *name, size_t name_len, const char *value, size_t value_len);
/* PW_OK also when it was not there. */
pw_status pw_remove_header(pw_map_type map, const char *name);
pw_status pw_remove_header_n(pw_map_type map, const char *name, size_t name_len);
/* All pairs, in order. pw_headers_free() it (also safe after a failure). */
pw_status pw_get_headers(pw_map_type map, pw_headers *out);
/* Replace the whole map with these pairs. */
pw_status pw_set_headers(pw_map_type map, const pw_header *pairs, size_t n);
/* The map's size as the host reports it: Envoy reports bytes (the sum of
 * keys and values), not the number of entries. */
pw_status pw_get_header_map_size(pw_map_type map, size_t *size);
void pw_headers_free(pw_headers *headers);
/* First value whose key equals `name` (ASCII case-insensitive), or NULL. */
const char *pw_headers_get(const pw_headers *headers, const char *name);

/* The spec's pairs serialization, for the raw proxy_* calls. *out is
 * malloc'd; free() it. pw_parse_pairs() points items into `buf` (not copied,
 * not owned: out->raw stays NULL) and fails with PW_PARSE_FAILURE on a
 * malformed buffer. Both empty encodings (size 0, or one 0x00 byte) parse. */
pw_status pw_serialize_pairs(const pw_header *pairs, size_t n, char **out, size_t *len);
pw_status pw_parse_pairs(const char *buf, size_t len, pw_headers *out);

/* ------------------------------------------------------------------------ */
/* Stream control and local responses                                        */
/* ------------------------------------------------------------------------ */

pw_status pw_continue_stream(pw_stream_type stream);
pw_status pw_close_stream(pw_stream_type stream);
static inline pw_status pw_continue_request(void) { return pw_continue_stream(PW_STREAM_HTTP_REQUEST); }
static inline pw_status pw_continue_response(void) { return pw_continue_stream(PW_STREAM_HTTP_RESPONSE); }

/* Answer the request without (or instead of) the upstream (spec,
 * proxy_send_local_response). Return PW_PAUSE from the current callback
 * afterwards. `details` ends up in %RESPONSE_CODE_DETAILS% (may be NULL);
 * grpc_status is a gRPC code or PW_GRPC_STATUS_NONE. */
pw_status pw_send_local_response(uint32_t status_code, const char *details, const char *body, size_t body_len,
                                 const pw_header *headers, size_t n_headers, int32_t grpc_status);
/* Same with a C-string body (NULL for none), no details, no gRPC status. */
pw_status pw_respond(uint32_t status_code, const char *body, const pw_header *headers, size_t n_headers);

/* ------------------------------------------------------------------------ */
/* Outgoing calls                                                            */
/* ------------------------------------------------------------------------ */

/* HTTP call to cluster `upstream`. headers must include :method, :path and
 * :authority (spec, proxy_http_call). The answer (or a failure, or the
 * timeout) arrives in pw_on_http_call_response with the same *token. */
pw_status pw_http_call(const char *upstream, const pw_header *headers, size_t n_headers,
                       const char *body, size_t body_len, const pw_header *trailers, size_t n_trailers,
                       uint32_t timeout_ms, uint32_t *token);

/* gRPC (spec, "gRPC calls"). `upstream` is a cluster name (Envoy also accepts
 * a serialized GrpcService: use the raw proxy_grpc_call for that). */
pw_status pw_grpc_call(const char *upstream, const char *service, const char *method,
                       const pw_header *metadata, size_t n_metadata, const char *message, size_t message_len,
                       uint32_t timeout_ms, uint32_t *token);
pw_status pw_grpc_stream(const char *upstream, const char *service, const char *method,
                         const pw_header *metadata, size_t n_metadata, uint32_t *token);
pw_status pw_grpc_send(uint32_t token, const char *message, size_t message_len, bool end_stream);
pw_status pw_grpc_cancel(uint32_t token);
pw_status pw_grpc_close(uint32_t token);
/* Status of the call being answered (in pw_on_http_call_response / pw_on_grpc_close). */
pw_status pw_get_status(uint32_t *code, char **message, size_t *len);

/* ------------------------------------------------------------------------ */
/* Properties (spec "Properties": host-specific, e.g. Envoy's attributes)    */
/* ------------------------------------------------------------------------ */

/* `path` is an array of segments, e.g. {"request", "path"}; the SDK joins
 * them with NULs as the host expects. Values are raw bytes: strings as-is,
 * integers as 8 little-endian bytes, and so on. */
pw_status pw_get_property(const char *const *path, size_t n_segments, char **value, size_t *len);
pw_status pw_set_property(const char *const *path, size_t n_segments, const char *value, size_t len);
/* Convenience: "request.path" -> {"request", "path"} (so no segment may
 * contain a dot: use pw_get_property for metadata keys that do). malloc'd C
 * string or NULL. */
char *pw_get_property_str(const char *dotted_path);
/* A property that is an 8-byte integer (e.g. "response.code"). */
pw_status pw_get_property_int(const char *dotted_path, int64_t *out);

/* ------------------------------------------------------------------------ */
/* Shared data (per VM id, across workers) and shared queues                 */
/* ------------------------------------------------------------------------ */

/* *cas is the version to pass back to pw_set_shared_data (NULL if unwanted). */
pw_status pw_get_shared_data(const char *key, char **value, size_t *len, uint32_t *cas);
/* cas 0 = unconditional; otherwise PW_CAS_MISMATCH if someone wrote since. */
pw_status pw_set_shared_data(const char *key, const char *value, size_t len, uint32_t cas);
/* Register (or open) a queue owned by the current plugin; its
 * pw_on_queue_ready fires when items arrive. */
pw_status pw_register_shared_queue(const char *name, uint32_t *queue_id);
/* Find a queue registered under `vm_id` (NULL or "" = this VM). */
pw_status pw_resolve_shared_queue(const char *vm_id, const char *name, uint32_t *queue_id);
pw_status pw_enqueue_shared_queue(uint32_t queue_id, const char *data, size_t len);
/* PW_EMPTY when there is nothing left. */
pw_status pw_dequeue_shared_queue(uint32_t queue_id, char **data, size_t *len);

/* ------------------------------------------------------------------------ */
/* Metrics                                                                   */
/* ------------------------------------------------------------------------ */

pw_status pw_define_metric(pw_metric_type type, const char *name, uint32_t *metric_id);
pw_status pw_increment_metric(uint32_t metric_id, int64_t delta);
pw_status pw_record_metric(uint32_t metric_id, uint64_t value);
pw_status pw_get_metric(uint32_t metric_id, uint64_t *value);

/* ------------------------------------------------------------------------ */
/* Contexts and foreign functions                                            */
/* ------------------------------------------------------------------------ */

/* Make later host calls act on another context (e.g. a stream, from
 * pw_on_queue_ready). The SDK already does this for call responses. */
pw_status pw_set_effective_context(uint32_t context_id);
/* After returning false from pw_on_done/pw_on_root_done: "now you may finish". */
pw_status pw_done(void);
/* Call a host extension by name (Envoy: e.g. "compress", "declare_property"). */
pw_status pw_call_foreign_function(const char *name, const char *args, size_t args_len,
                                   char **result, size_t *result_len);

/* ------------------------------------------------------------------------ */
/* JSON reader (for filter configuration)                                    */
/* ------------------------------------------------------------------------ */

/* A view of one JSON value inside text you own (nothing is copied). Get the
 * root from pw_json_parse(), which validates the whole document (RFC 8259,
 * depth <= 64); every other function navigates from there.
 *
 *     pw_json cfg;
 *     if (!pw_json_parse(config, len, &cfg)) return false;
 *     char *name = pw_json_get_string(cfg, "header.name");   // malloc'd or NULL
 *     int64_t limit = 10; pw_json_get_int(cfg, "limits.0", &limit);
 *
 * Paths are dot-separated object keys; an all-digit segment indexes an array.
 * Keys containing dots: use pw_json_get(). */
typedef struct pw_json {
    const char *p;
    size_t len;
} pw_json;

typedef enum {
    PW_JSON_INVALID = 0,
    PW_JSON_NULL,
    PW_JSON_BOOL,
    PW_JSON_NUMBER,
    PW_JSON_STRING,
    PW_JSON_ARRAY,
    PW_JSON_OBJECT,
} pw_json_type;

bool pw_json_parse(const char *text, size_t len, pw_json *root);
pw_json_type pw_json_typeof(pw_json v);
/* Member `key` of an object (first one if repeated). */
bool pw_json_get(pw_json object, const char *key, pw_json *out);
/* Element i of an array. */
bool pw_json_index(pw_json array, size_t i, pw_json *out);
/* Elements of an array / members of an object; 0 for anything else. */
size_t pw_json_count(pw_json v);
/* Iterate: size_t pos = 0; while (pw_json_next(obj, &pos, &k, &v)) {...}
 * `key` is the member name (a string value) for objects, {NULL, 0} for arrays. */
bool pw_json_next(pw_json container, size_t *pos, pw_json *key, pw_json *value);
/* Follow a path ("" is `root` itself). */
bool pw_json_find(pw_json root, const char *path, pw_json *out);

bool pw_json_bool(pw_json v, bool *out);
bool pw_json_number(pw_json v, double *out);
/* Integers only (no fraction or exponent) that fit in int64. */
bool pw_json_int(pw_json v, int64_t *out);
/* Decode a string value (escapes, \uXXXX to UTF-8) into buf with a NUL.
 * *len (if not NULL) gets the decoded length even when it does not fit;
 * returns false if v is not a string or buf is too small. */
bool pw_json_string(pw_json v, char *buf, size_t cap, size_t *len);
/* Decoded string as a malloc'd C string, or NULL. */
char *pw_json_strdup(pw_json v);
/* True if v is a string whose decoded value equals s. */
bool pw_json_streq(pw_json v, const char *s);

/* pw_json_find + conversion. Return false/NULL if absent or of another type,
 * leaving *out untouched, so initialize *out with your default. */
char *pw_json_get_string(pw_json root, const char *path);
bool pw_json_get_int(pw_json root, const char *path, int64_t *out);
bool pw_json_get_number(pw_json root, const char *path, double *out);
bool pw_json_get_bool(pw_json root, const char *path, bool *out);

/* Envoy's StringMatcher (pw_match.h) from its JSON: {"exact"|"prefix"|"suffix"|"contains": s,
 * "ignore_case": b} or {"safe_regex": {"regex": s}}; also Istio's StringMatch {"regex": s} and a
 * bare string (exact). `field` names the value for the log, e.g. "cors: allow_origins[2]". On
 * an unsupported regex or a matcher of no known kind, log "<field>.<key>: <reason>" at error
 * level and return false: a filter then refuses its configuration rather than mean less. */
bool pw_json_string_matcher(pw_json spec, const char *field, pw_string_matcher *out);

/* ------------------------------------------------------------------------ */
/* The raw ABI: host functions as the spec declares them (spec, "Functions   */
/* exposed by the host"). The pw_* wrappers above cover them all; these are  */
/* here for what the wrappers do not do. Status values are pw_status.        */
/* ------------------------------------------------------------------------ */

#if defined(__wasm__)
#define PW_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#else
#define PW_IMPORT(name)
#endif

PW_IMPORT(proxy_log) uint32_t proxy_log(uint32_t level, const char *message, size_t size);
PW_IMPORT(proxy_get_log_level) uint32_t proxy_get_log_level(uint32_t *level);
PW_IMPORT(proxy_get_current_time_nanoseconds) uint32_t proxy_get_current_time_nanoseconds(uint64_t *time);
PW_IMPORT(proxy_set_tick_period_milliseconds) uint32_t proxy_set_tick_period_milliseconds(uint32_t period);
PW_IMPORT(proxy_done) uint32_t proxy_done(void);
PW_IMPORT(proxy_set_effective_context) uint32_t proxy_set_effective_context(uint32_t context_id);

PW_IMPORT(proxy_get_buffer_bytes)
uint32_t proxy_get_buffer_bytes(uint32_t buffer, size_t start, size_t max_size, char **data, size_t *size);
PW_IMPORT(proxy_set_buffer_bytes)
uint32_t proxy_set_buffer_bytes(uint32_t buffer, size_t start, size_t size, const char *data, size_t data_size);
PW_IMPORT(proxy_get_buffer_status)
uint32_t proxy_get_buffer_status(uint32_t buffer, size_t *size, uint32_t *flags);

PW_IMPORT(proxy_get_header_map_size) uint32_t proxy_get_header_map_size(uint32_t map, size_t *size);
PW_IMPORT(proxy_get_header_map_pairs) uint32_t proxy_get_header_map_pairs(uint32_t map, char **data, size_t *size);
PW_IMPORT(proxy_set_header_map_pairs) uint32_t proxy_set_header_map_pairs(uint32_t map, const char *data, size_t size);
PW_IMPORT(proxy_get_header_map_value)
uint32_t proxy_get_header_map_value(uint32_t map, const char *key, size_t key_size, char **value, size_t *value_size);
PW_IMPORT(proxy_add_header_map_value)
uint32_t proxy_add_header_map_value(uint32_t map, const char *key, size_t key_size, const char *value, size_t value_size);
PW_IMPORT(proxy_replace_header_map_value)
uint32_t proxy_replace_header_map_value(uint32_t map, const char *key, size_t key_size, const char *value,
                                        size_t value_size);
PW_IMPORT(proxy_remove_header_map_value)
uint32_t proxy_remove_header_map_value(uint32_t map, const char *key, size_t key_size);

PW_IMPORT(proxy_continue_stream) uint32_t proxy_continue_stream(uint32_t stream);
PW_IMPORT(proxy_close_stream) uint32_t proxy_close_stream(uint32_t stream);
PW_IMPORT(proxy_get_status) uint32_t proxy_get_status(uint32_t *code, char **message, size_t *size);
PW_IMPORT(proxy_send_local_response)
uint32_t proxy_send_local_response(uint32_t status_code, const char *details, size_t details_size, const char *body,
                                   size_t body_size, const char *headers, size_t headers_size, uint32_t grpc_status);

PW_IMPORT(proxy_http_call)
uint32_t proxy_http_call(const char *upstream, size_t upstream_size, const char *headers, size_t headers_size,
                         const char *body, size_t body_size, const char *trailers, size_t trailers_size,
                         uint32_t timeout_ms, uint32_t *token);
PW_IMPORT(proxy_grpc_call)
uint32_t proxy_grpc_call(const char *upstream, size_t upstream_size, const char *service, size_t service_size,
                         const char *method, size_t method_size, const char *metadata, size_t metadata_size,
                         const char *message, size_t message_size, uint32_t timeout_ms, uint32_t *token);
PW_IMPORT(proxy_grpc_stream)
uint32_t proxy_grpc_stream(const char *upstream, size_t upstream_size, const char *service, size_t service_size,
                           const char *method, size_t method_size, const char *metadata, size_t metadata_size,
                           uint32_t *token);
PW_IMPORT(proxy_grpc_send)
uint32_t proxy_grpc_send(uint32_t token, const char *message, size_t message_size, uint32_t end_stream);
PW_IMPORT(proxy_grpc_cancel) uint32_t proxy_grpc_cancel(uint32_t token);
PW_IMPORT(proxy_grpc_close) uint32_t proxy_grpc_close(uint32_t token);

PW_IMPORT(proxy_get_property)
uint32_t proxy_get_property(const char *path, size_t path_size, char **value, size_t *value_size);
PW_IMPORT(proxy_set_property)
uint32_t proxy_set_property(const char *path, size_t path_size, const char *value, size_t value_size);

PW_IMPORT(proxy_get_shared_data)
uint32_t proxy_get_shared_data(const char *key, size_t key_size, char **value, size_t *value_size, uint32_t *cas);
PW_IMPORT(proxy_set_shared_data)
uint32_t proxy_set_shared_data(const char *key, size_t key_size, const char *value, size_t value_size, uint32_t cas);
PW_IMPORT(proxy_register_shared_queue)
uint32_t proxy_register_shared_queue(const char *name, size_t name_size, uint32_t *queue_id);
PW_IMPORT(proxy_resolve_shared_queue)
uint32_t proxy_resolve_shared_queue(const char *vm_id, size_t vm_id_size, const char *name, size_t name_size,
                                    uint32_t *queue_id);
PW_IMPORT(proxy_enqueue_shared_queue)
uint32_t proxy_enqueue_shared_queue(uint32_t queue_id, const char *data, size_t size);
PW_IMPORT(proxy_dequeue_shared_queue)
uint32_t proxy_dequeue_shared_queue(uint32_t queue_id, char **data, size_t *size);

PW_IMPORT(proxy_define_metric)
uint32_t proxy_define_metric(uint32_t type, const char *name, size_t name_size, uint32_t *metric_id);
PW_IMPORT(proxy_increment_metric) uint32_t proxy_increment_metric(uint32_t metric_id, int64_t delta);
PW_IMPORT(proxy_record_metric) uint32_t proxy_record_metric(uint32_t metric_id, uint64_t value);
PW_IMPORT(proxy_get_metric) uint32_t proxy_get_metric(uint32_t metric_id, uint64_t *value);

PW_IMPORT(proxy_call_foreign_function)
uint32_t proxy_call_foreign_function(const char *name, size_t name_size, const char *args, size_t args_size,
                                     char **results, size_t *results_size);

#ifdef __cplusplus
}
#endif

#endif /* ENVOYEXT_PROXY_WASM_H */
