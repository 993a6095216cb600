/* A Wasm filter for tests/test_scenario_format.py: logs while it starts (VM start, configure,
 * with its root_id and vm_id), and on request the route metadata an `x-md` header names:
 * "NAMESPACE/KEY" (a value), "NAMESPACE" (a Struct), or "*" (the whole Metadata proto), in hex. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proxy_wasm.h"

bool pw_on_vm_start(pw_root *root, const char *vm_config, size_t len) {
    pw_log(PW_LOG_INFO, "vm started");
    return true;
}

bool pw_on_configure(pw_root *root, const char *config, size_t len) {
    char *root_id = pw_get_property_str("plugin_root_id");
    char *vm_id = pw_get_property_str("plugin_vm_id");
    pw_logf(PW_LOG_INFO, "configured %.*s root_id=%s vm_id=%s", (int)len, config,
            root_id ? root_id : "-", vm_id ? vm_id : "-");
    free(root_id);
    free(vm_id);
    return true;
}

static void log_hex(const char *what, pw_status s, const char *v, size_t n) {
    char *out = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", (unsigned char)v[i]);
    out[2 * n] = 0;
    pw_logf(PW_LOG_INFO, "md %s status=%d hex=%s", what, (int)s, out);
    free(out);
}

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    char *want = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, "x-md");
    if (want == NULL) return PW_CONTINUE;
    const char *path[5] = {"xds", "route_metadata", "filter_metadata", NULL, NULL};
    size_t n = 2;
    char *slash = strchr(want, '/');
    if (strcmp(want, "*") != 0) {
        if (slash) *slash = 0;
        path[3] = want;
        path[4] = slash ? slash + 1 : NULL;
        n = slash ? 5 : 4;
    }
    char *value = NULL;
    size_t len = 0;
    pw_status s = pw_get_property(path, n, &value, &len);
    if (slash) *slash = '/';
    log_hex(want, s, value, len);
    free(value);
    free(want);
    return PW_CONTINUE;
}
