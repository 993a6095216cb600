/* Calls a stream-only host function from a constructor, i.e. during _initialize. */
#include "host_abi.h"
#include <stdlib.h>
EXPORT(proxy_abi_version_0_2_1) void abi(void) {}
__attribute__((constructor)) static void init(void) {
  char *v; size_t n;
  logs(LOG_INFO, "initializing");
  proxy_get_property("plugin_name", 11, &v, &n);
}
EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t id, uint32_t n, uint32_t eos) { return 0; }
