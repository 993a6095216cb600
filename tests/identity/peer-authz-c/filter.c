/*
 * peer-authz-c: 403 unless the downstream peer's SPIFFE ID (the URI SAN of the certificate it
 * presented, Envoy's `connection.uri_san_peer_certificate`) is the one `allow` names. Let-in
 * requests carry the TLS attributes the filter saw (x-peer, x-mtls, x-local, x-dns, x-local-dns,
 * x-subject, x-local-subject, x-digest, x-tls, x-sni), "<absent>" for an attribute the host does
 * not have, so a scenario can compare them between the emulator and live Envoy.
 */
#include <stdio.h>
#include <string.h>

#include "proxy_wasm.h"

#define ABSENT "<absent>"

typedef struct {
    char *allow;
} config;

bool pw_on_configure(pw_root *root, const char *json, size_t len) {
    pw_json cfg;
    if (!pw_json_parse(json, len, &cfg)) {
        pw_log(PW_LOG_ERROR, "peer-authz-c: configuration is not JSON");
        return false;
    }
    config *c = calloc(1, sizeof *c);
    c->allow = pw_json_get_string(cfg, "allow");
    if (c->allow == NULL) {
        pw_log(PW_LOG_ERROR, "peer-authz-c: configuration needs a string field 'allow'");
        free(c);
        return false;
    }
    root->data = c;
    return true;
}

/* connection.mtls: one byte, 1 when the connection is TLS and the peer presented a certificate. */
static const char *mtls(void) {
    static const char *const path[] = {"connection", "mtls"};
    char *v = NULL;
    size_t len = 0;
    const char *out = ABSENT;
    if (pw_get_property(path, 2, &v, &len) == PW_OK && len == 1) out = v[0] ? "true" : "false";
    free(v);
    return out;
}

static void report(const char *header, const char *property) {
    char *v = pw_get_property_str(property);
    pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, header, v ? v : ABSENT);
    free(v);
}

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    config *c = ctx->root->data;
    char *peer = pw_get_property_str("connection.uri_san_peer_certificate");
    const char *is_mtls = mtls();
    if (peer == NULL || strcmp(is_mtls, "true") != 0 || strcmp(peer, c->allow) != 0) {
        char body[512];
        snprintf(body, sizeof body, "peer [%s] (mtls %s) is not allowed", peer ? peer : ABSENT, is_mtls);
        free(peer);
        pw_respond(403, body, NULL, 0);
        return PW_PAUSE;
    }
    pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-peer", peer);
    free(peer);
    pw_replace_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-mtls", is_mtls);
    report("x-local", "connection.uri_san_local_certificate");
    report("x-dns", "connection.dns_san_peer_certificate");
    report("x-local-dns", "connection.dns_san_local_certificate");
    report("x-subject", "connection.subject_peer_certificate");
    report("x-local-subject", "connection.subject_local_certificate");
    report("x-digest", "connection.sha256_peer_certificate_digest");
    report("x-tls", "connection.tls_version");
    report("x-sni", "connection.requested_server_name");
    return PW_CONTINUE;
}

void pw_on_root_delete(pw_root *root) {
    config *c = root->data;
    if (c != NULL) {
        free(c->allow);
        free(c);
    }
}
