-- A named script (source_codes.audit): it gets the filter's JSON config appended too.
function envoy_on_request(h)
  h:headers():add("x-script", "audit")
  h:headers():add("x-audit-config", envoyext_config.greeting)
  h:stats():counter("audited"):inc()
end
