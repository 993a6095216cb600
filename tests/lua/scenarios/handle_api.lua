-- The rest of the 1.40 stream handle: requestHeaders() in both directions, virtualHost(), route(),
-- connectionStreamInfo(), filterState(), dynamicTypedMetadata(), base64Decode(),
-- clearRouteCache(), setUpstreamOverrideHost(), drainConnectionUponCompletion().
local function try(h, label, f)
  local ok, err = pcall(f)
  h:logInfo(label .. " " .. tostring(ok) .. " " .. tostring(err))
end

function envoy_on_request(h)
  local mode = h:headers():get("x-mode") or ""
  if mode == "objects" then
    local rh = h:requestHeaders()
    h:logInfo("requestHeaders is headers: " .. tostring(rh == h:headers()) .. ", same twice: " .. tostring(rh == h:requestHeaders()))
    rh:add("x-via-request-headers", "1")
    local vmd = h:virtualHost():metadata()
    local n = 0
    for _ in pairs(vmd) do n = n + 1 end
    h:logInfo("vhost metadata entries " .. n .. " type " .. type(vmd))
    h:headers():add("x-route-tier", tostring(h:route():metadata():get("tier")))
    h:logInfo("route object cached " .. tostring(h:route() == h:route()))
    local cdm = h:connectionStreamInfo():dynamicMetadata()
    n = 0
    for _ in pairs(cdm) do n = n + 1 end
    h:logInfo("connection dynamic metadata entries " .. n .. " get " .. select("#", cdm:get("x")))
    try(h, "connection dynamic metadata set", function() cdm:set("a", "b", "c") end)
    h:logInfo("typed " .. tostring(h:streamInfo():dynamicTypedMetadata("envoy.x")) .. " " ..
              tostring(h:connectionStreamInfo():dynamicTypedMetadata("envoy.x")))
    local fs = h:streamInfo():filterState()
    h:logInfo("filter state absent returns " .. select("#", fs:get("my.key")))
    fs:set("my.key", "envoy.string", "hello")
    fs:set("num.key", "envoy.string", 42)
    h:logInfo("filter state " .. fs:get("my.key") .. " " .. fs:get("num.key") .. " field " .. select("#", fs:get("my.key", "f")))
    try(h, "unknown factory", function() fs:set("k", "no.such.factory", "x") end)
    try(h, "set without value", function() fs:set("k", "envoy.string") end)
    h:headers():add("x-b64", h:base64Decode("aGVsbG8=") .. "," .. h:base64Decode("aGVsbG8") .. "," ..
                    tostring(h:base64Decode("!!!")) .. "," .. tostring(h:base64Decode("-_8")))
    h:setUpstreamOverrideHost("127.0.0.1:1")
    h:setUpstreamOverrideHost("[::1]:80", false)
    try(h, "override by name", function() h:setUpstreamOverrideHost("example.com") end)
    try(h, "override strict not boolean", function() h:setUpstreamOverrideHost("127.0.0.1", "yes") end)
    try(h, "override tail call", function() return h:setUpstreamOverrideHost() end)
    try(h, "typed tail call", function() return h:streamInfo():dynamicTypedMetadata() end)
    try(h, "wrong receiver", function() h:route().metadata() end)
  elseif mode == "chunks" then
    -- After the headers went on, headers() refuses changes; requestHeaders() does not.
    for _ in h:bodyChunks() do
      try(h, "headers after continue", function() h:headers():add("x-late", "1") end)
    end
  elseif mode == "route-request-headers" then
    h:logInfo("route before " .. h:streamInfo():routeName())
    h:requestHeaders():add("x-go", "alt")
  elseif mode == "route-headers" then
    h:logInfo("route before " .. h:streamInfo():routeName())
    h:headers():add("x-go", "alt")
  elseif mode == "route-clear" then
    h:logInfo("route before " .. h:streamInfo():routeName())
    h:requestHeaders():add("x-go", "alt")
    h:clearRouteCache()
  elseif mode == "strict-override" then
    h:setUpstreamOverrideHost("[::1]:80", true)
  elseif mode == "drain" then
    h:streamInfo():drainConnectionUponCompletion()
  elseif mode == "drain-respond" then
    h:streamInfo():drainConnectionUponCompletion()
    h:respond({[":status"] = "403"}, "no")
  end
end

function envoy_on_response(h)
  local rh = h:requestHeaders()
  local mode = rh:get("x-mode") or ""
  h:headers():add("x-route", h:streamInfo():routeName())
  if mode == "objects" then
    h:headers():add("x-request-path", rh:get(":path"))
    h:headers():add("x-request-added", rh:get("x-via-request-headers"))
    h:headers():add("x-request-timeout", tostring(rh:get("x-envoy-expected-rq-timeout-ms")))
    local n = 0
    for _ in pairs(rh) do n = n + 1 end
    h:headers():add("x-request-count", n)
    rh:add("x-from-response", "1")  -- allowed, reaches nothing
    h:headers():add("x-request-after-add", rh:get("x-from-response"))
    h:headers():add("x-filter-state", h:streamInfo():filterState():get("my.key"))
    h:headers():add("x-response-route-tier", tostring(h:route():metadata():get("tier")))
    h:clearRouteCache()
    h:setUpstreamOverrideHost("127.0.0.1")
    try(h, "respond from the response path", function() h:respond({[":status"] = "200"}, "x") end)
  elseif mode == "drain-response" then
    h:streamInfo():drainConnectionUponCompletion()
  end
end
