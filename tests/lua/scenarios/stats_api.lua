-- handle:stats(): counters, gauges and histograms under http.ingress_http.lua.<name>, and the
-- messages of their argument checks (Envoy 1.40).
local function try(h, label, f)
  local ok, err = pcall(f)
  h:logInfo(label .. " " .. tostring(ok) .. " " .. tostring(err))
end

function envoy_on_request(h)
  local mode = h:headers():get("x-mode")
  local s = h:stats()
  if mode == "counts" then
    local c = s:counter("requests")
    c:inc()
    c:add(4)
    c:add(2.9)          -- luaL_checkinteger truncates
    c:add("3")          -- and accepts numeric strings
    h:headers():add("x-requests-now", c:value())
    h:headers():add("x-same-scope", tostring(s == h:stats()))
    h:headers():add("x-new-wrapper", tostring(s:counter("requests") == c))
    local g = s:gauge("inflight")
    g:set(10); g:inc(); g:add(5); g:dec(); g:sub(3)
    h:headers():add("x-gauge", g:value())
    s:histogram("latency", "ms"):recordValue(42)
    s:histogram("latency"):recordValue(3.7)
    s:histogram("size", "bytes"):recordValue("11")
    s:counter(7):inc()
    saved_gauge = g
  elseif mode == "errors" then
    try(h, "negative add", function() s:counter("bad"):add(-1) end)
    try(h, "string add", function() s:counter("bad"):add("x") end)
    try(h, "no name", function() s:counter() end)
    try(h, "gauge sub negative", function() s:gauge("g"):sub(-1) end)
    try(h, "gauge add negative", function() s:gauge("g"):add(-2) end)
    try(h, "gauge set negative", function() s:gauge("g"):set(-5) end)
    try(h, "gauge set nothing", function() s:gauge("g"):set() end)
    try(h, "histogram negative", function() s:histogram("hist"):recordValue(-1) end)
    try(h, "histogram huge", function() s:histogram("hist"):recordValue(1e20) end)
    try(h, "histogram unit", function() s:histogram("hist", "furlongs") end)
    try(h, "histogram unit number", function() s:histogram("hist", 5) end)
    try(h, "wrong receiver", function() s.counter("x") end)
    try(h, "wrong receiver counter", function() s:counter("x").inc() end)
    try(h, "wrong receiver gauge", function() s:gauge("g").set(1) end)
    try(h, "tail call", function() return s:counter() end)
  elseif mode == "wrap" then
    local g = s:gauge("wrapping")
    g:set(10)
    g:sub(100)
    h:headers():add("x-wrapped", tostring(g:value()))
    g:add(100)
  end
end

function envoy_on_response(h)
  local mode = h:requestHeaders():get("x-mode")
  if mode == "counts" then
    -- Stats objects are not tied to a coroutine: one kept from the request still works.
    saved_gauge:inc()
    h:stats():counter("responses"):inc()
  end
end
