-- The filter.yaml `lua:` block: stat_prefix, clear_route_cache: false, named source_codes.
function envoy_on_request(h)
  h:headers():add("x-script", "default")
  h:headers():add("x-config", envoyext_config.greeting)
  local mode = h:headers():get("x-mode")
  if mode == "route" then
    h:logInfo("route before " .. h:streamInfo():routeName())
    h:headers():add("x-go", "alt")      -- with clear_route_cache: false the route stays
  elseif mode == "clear" then
    h:logInfo("route before " .. h:streamInfo():routeName())
    h:headers():add("x-go", "alt")
    h:clearRouteCache()                 -- explicit clearing still clears
  elseif mode == "boom" then
    error("boom")
  end
  h:stats():counter("seen"):inc()
end

function envoy_on_response(h)
  h:headers():add("x-route", h:streamInfo():routeName())
end
