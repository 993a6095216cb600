-- Adapted from the examples in Envoy's Lua filter documentation.
function envoy_on_request(request_handle)
  local mode = request_handle:headers():get("x-example")
  if mode == "body-size" then
    -- The documented one-liner: headers() is taken before body() yields, so the header map
    -- is dead by the time add() runs (envoyproxy/envoy#27270).
    request_handle:headers():add("request_body_size", request_handle:body():length())
  elseif mode == "body-size-fixed" then
    local size = request_handle:body():length()
    request_handle:headers():add("request_body_size", size)
  elseif mode == "call" then
    local headers, body = request_handle:httpCall(
      "lua_cluster",
      {
        [":method"] = "POST",
        [":path"] = "/",
        [":authority"] = "lua_cluster"
      },
      "hello world",
      5000)
    request_handle:headers():add("upstream_foo", headers["foo"])
    request_handle:headers():add("upstream_body_size", #body)
  elseif mode == "call-respond" then
    local headers, body = request_handle:httpCall(
      "lua_cluster",
      {
        [":method"] = "POST",
        [":path"] = "/",
        [":authority"] = "lua_cluster",
        ["set-cookie"] = { "lang=lua; Path=/", "type=binding; Path=/" }
      },
      "hello world",
      5000)
    request_handle:respond(
      {[":status"] = "403",
       ["upstream_foo"] = headers["foo"]},
      "nope")
  end
end

function envoy_on_response(response_handle)
  local size = response_handle:body():length()
  response_handle:headers():add("response_body_size", size)
  response_handle:headers():remove("foo")
end
