-- Script errors: each is counted, logged as Envoy logs it, and the request goes on unchanged.
local saved_handle

function envoy_on_request(handle)
  local mode = handle:headers():get("x-fail")
  local headers = handle:headers()
  headers:add("x-before-error", "kept")
  if mode == "runtime" then
    local t = nil
    headers:add("x-never", t.field)
  elseif mode == "error-call" then
    error("custom failure")
  elseif mode == "error-table" then
    error({code = 1})
  elseif mode == "dead-after-call" then
    handle:httpCall("side", {[":method"] = "GET", [":path"] = "/", [":authority"] = "side"}, nil, 500)
    headers:add("x-after-call", "never")
  elseif mode == "dead-stream-info" then
    local info = handle:streamInfo()
    handle:body()
    handle:logInfo(info:protocol())
  elseif mode == "bad-arg" then
    headers:add("x-number-ok", 1.5)
    headers:get({})
  elseif mode == "bad-index" then
    headers:getAtIndex("x-fail", "first")
  elseif mode == "respond-late" then
    for _ in handle:bodyChunks() do end
    handle:respond({[":status"] = "403"}, "too late")
  elseif mode == "respond-status" then
    handle:respond({[":status"] = "199"}, "no")
  elseif mode == "respond-no-status" then
    handle:respond({["x-a"] = "b"}, "no")
  elseif mode == "respond-bad-header" then
    handle:respond({[":status"] = "403", [1] = "x"}, "no")
  elseif mode == "respond-bool-value" then
    handle:respond({[":status"] = "403", ["x-flag"] = true}, "no")
  elseif mode == "call-bool-key" then
    handle:httpCall("side", {[":method"] = "GET", [":path"] = "/", [":authority"] = "x", [true] = "x"}, nil, 100)
  elseif mode == "yield" then
    coroutine.yield("surprise")
  elseif mode == "iterate-modify" then
    for k in pairs(headers) do headers:remove(k) end
  elseif mode == "iterate-twice" then
    for _ in pairs(headers) do
      for _ in pairs(headers) do end
    end
  elseif mode == "modify-after-continue" then
    for _ in handle:bodyChunks() do end
    handle:headers():add("x-too-late", "1")
  elseif mode == "no-cluster" then
    handle:httpCall("nonexistent", {[":method"] = "GET", [":path"] = "/", [":authority"] = "x"}, nil, 100)
  elseif mode == "missing-path" then
    handle:httpCall("side", {[":method"] = "GET", [":authority"] = "x"}, nil, 100)
  elseif mode == "bad-option" then
    handle:httpCall("side", {[":method"] = "GET", [":path"] = "/", [":authority"] = "x"}, nil, {retries = 3})
  elseif mode == "negative-timeout" then
    handle:httpCall("side", {[":method"] = "GET", [":path"] = "/", [":authority"] = "x"}, nil, -1)
  elseif mode == "bad-async-flag" then
    handle:httpCall("side", {[":method"] = "GET", [":path"] = "/", [":authority"] = "x"}, nil, 100, "yes")
  elseif mode == "timestamp" then
    handle:timestamp(EnvoyTimestampResolution.MICROSECOND)
  elseif mode == "dynmeta" then
    handle:streamInfo():dynamicMetadata():set("ns", "k", {[true] = 1})
  elseif mode == "dynmeta-fn" then
    handle:streamInfo():dynamicMetadata():set("ns", "k", print)
  elseif mode == "log-nil" then
    handle:logInfo(nil)
  elseif mode == "save-handle" then
    saved_handle = handle
  end
end

function envoy_on_response(handle)
  local mode = handle:headers():get("x-response-fail")
  if mode == "respond" then
    handle:respond({[":status"] = "500"}, "from response")
  elseif saved_handle ~= nil then
    -- Kept by envoy_on_request of this same stream: dead outside its coroutine.
    local h = saved_handle
    saved_handle = nil
    h:headers()
  end
  handle:headers():add("x-response-ran", "yes")
end
