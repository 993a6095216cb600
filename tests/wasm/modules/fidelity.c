/* fidelity: the Envoy behaviours third-party modules met, steered by the request's x-probe header.
 *   local-case  proxy_send_local_response with mixed-case header names (Envoy lower-cases them)
 *   add-twice   adds every name in x-arg twice ("a", then "b") to the request headers, and every
 *               name in x-resp-arg twice to the response headers (inline headers join, others repeat)
 *   byte-length adds x-arg-length (request) and x-up-length (response): the byte lengths of the
 *               x-arg request header and the upstream's x-up response header as the filter sees them */
#include "host_abi.h"
#include <stdlib.h>

EXPORT(proxy_abi_version_0_2_1) void abi_marker(void) {}

static char cmd[64][32], resp_names[64][256];

static int get_header(uint32_t map, const char *key, char *out, size_t cap) {
  char *v = 0; size_t n = 0;
  if (proxy_get_header_map_value(map, key, strlen(key), &v, &n) != 0) { out[0] = 0; return 0; }
  if (n >= cap) n = cap - 1;
  memcpy(out, v, n); out[n] = 0; free(v);
  return (int)n;
}

/* Adds each comma-separated name of `names` twice to `map`. */
static void add_length(uint32_t map, const char *name, int n) {
  char digits[16];
  int len = 0;
  do { digits[len++] = (char)('0' + n % 10); n /= 10; } while (n > 0);
  for (int i = 0; i < len / 2; i++) { char t = digits[i]; digits[i] = digits[len - 1 - i]; digits[len - 1 - i] = t; }
  proxy_add_header_map_value(map, name, strlen(name), digits, (size_t)len);
}

static void add_twice(uint32_t map, const char *names) {
  const char *p = names;
  while (*p) {
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    proxy_add_header_map_value(map, p, n, "a", 1);
    proxy_add_header_map_value(map, p, n, "b", 1);
    p += n + (end ? 1 : 0);
  }
}

EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {}
EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t id, uint32_t size) { return 1; }
EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t id, uint32_t size) { return 1; }

EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t id, uint32_t n, uint32_t eos) {
  char arg[512];
  get_header(REQ_HEADERS, "x-probe", cmd[id % 64], sizeof cmd[0]);
  if (strcmp(cmd[id % 64], "local-case") == 0) {
    /* two pairs: X-Mixed-Case: 1, X-Other: two */
    const char hdr[] = "\x02\x00\x00\x00" "\x0c\x00\x00\x00\x01\x00\x00\x00" "\x07\x00\x00\x00\x03\x00\x00\x00"
                       "X-Mixed-Case\0" "1\0" "X-Other\0" "two\0";
    proxy_send_local_response(403, "case", 4, "nope", 4, hdr, sizeof hdr - 1, -1);
  } else if (strcmp(cmd[id % 64], "add-twice") == 0) {
    get_header(REQ_HEADERS, "x-arg", arg, sizeof arg);
    add_twice(REQ_HEADERS, arg);
    get_header(REQ_HEADERS, "x-resp-arg", resp_names[id % 64], sizeof resp_names[0]);
  } else if (strcmp(cmd[id % 64], "byte-length") == 0) {
    add_length(REQ_HEADERS, "x-arg-length", get_header(REQ_HEADERS, "x-arg", arg, sizeof arg));
  }
  return 0;
}

EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t id, uint32_t n, uint32_t eos) {
  char up[256];
  if (strcmp(cmd[id % 64], "add-twice") == 0) add_twice(RESP_HEADERS, resp_names[id % 64]);
  if (strcmp(cmd[id % 64], "byte-length") == 0) add_length(RESP_HEADERS, "x-up-length", get_header(RESP_HEADERS, "x-up", up, sizeof up));
  return 0;
}
