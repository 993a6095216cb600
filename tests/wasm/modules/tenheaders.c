/* Touches ten headers per request and response (reads, adds, replaces, removes). For the benchmark. */
#include "host_abi.h"
#include <stdlib.h>
EXPORT(proxy_abi_version_0_2_1) void abi(void) {}
EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {}
static void get(uint32_t map, const char *k) {
  char *v = 0; size_t n = 0;
  proxy_get_header_map_value(map, k, strlen(k), &v, &n);
  free(v);
}
EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t id, uint32_t n, uint32_t eos) {
  get(REQ_HEADERS, ":path"); get(REQ_HEADERS, ":method"); get(REQ_HEADERS, ":authority");
  get(REQ_HEADERS, "user-agent"); get(REQ_HEADERS, "x-a");
  proxy_add_header_map_value(REQ_HEADERS, "x-b", 3, "1", 1);
  proxy_add_header_map_value(REQ_HEADERS, "x-c", 3, "2", 1);
  proxy_replace_header_map_value(REQ_HEADERS, "x-d", 3, "3", 1);
  proxy_remove_header_map_value(REQ_HEADERS, "x-e", 3);
  proxy_remove_header_map_value(REQ_HEADERS, "x-f", 3);
  return 0;
}
EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t id, uint32_t n, uint32_t eos) {
  get(RESP_HEADERS, ":status"); get(RESP_HEADERS, "content-type"); get(RESP_HEADERS, "x-a");
  get(RESP_HEADERS, "x-b"); get(RESP_HEADERS, "x-c");
  proxy_add_header_map_value(RESP_HEADERS, "x-r1", 4, "1", 1);
  proxy_add_header_map_value(RESP_HEADERS, "x-r2", 4, "2", 1);
  proxy_replace_header_map_value(RESP_HEADERS, "x-r3", 4, "3", 1);
  proxy_remove_header_map_value(RESP_HEADERS, "x-r4", 4);
  proxy_remove_header_map_value(RESP_HEADERS, "server", 6);
  return 0;
}
EXPORT(proxy_on_done) uint32_t on_done(uint32_t id) { return 1; }
