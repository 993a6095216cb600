/* An ABI v0.1.0 module: proxy_get_configuration, proxy_continue_request, two-argument
 * on_request_headers, and "" (not NotFound) for a missing header. */
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#define IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define EXPORT(name) __attribute__((export_name(#name)))
IMPORT(proxy_log) uint32_t proxy_log(uint32_t level, const char *msg, size_t size);
IMPORT(proxy_get_configuration) uint32_t proxy_get_configuration(char **p, size_t *s);
IMPORT(proxy_continue_request) uint32_t proxy_continue_request(void);
IMPORT(proxy_clear_route_cache) uint32_t proxy_clear_route_cache(void);
IMPORT(proxy_get_header_map_value) uint32_t proxy_get_header_map_value(uint32_t t, const char *k, size_t ks, char **v, size_t *vs);
IMPORT(proxy_add_header_map_value) uint32_t proxy_add_header_map_value(uint32_t t, const char *k, size_t ks, const char *v, size_t vs);

EXPORT(proxy_abi_version_0_1_0) void abi(void) {}
static char cfg[64];
EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t id, uint32_t size) {
  char *p = 0; size_t n = 0;
  proxy_get_configuration(&p, &n);
  if (n > 60) n = 60;
  memcpy(cfg, p, n); cfg[n] = 0;
  proxy_log(2, p, n);
  return 1;
}
EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t id, uint32_t n) {
  char *v = 0; size_t vs = 99;
  uint32_t s = proxy_get_header_map_value(0, "x-absent", 8, &v, &vs);
  char msg[64];
  int len = 0;
  msg[len++] = 'a'; msg[len++] = 'b'; msg[len++] = 's'; msg[len++] = '=';
  msg[len++] = '0' + s; msg[len++] = '/'; msg[len++] = '0' + (char)vs;
  proxy_log(2, msg, len);
  proxy_add_header_map_value(0, "x-config", 8, cfg, strlen(cfg));
  proxy_clear_route_cache();
  return 0;
}
