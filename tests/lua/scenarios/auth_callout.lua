-- External authorization the way Istio EnvoyFilter samples do it: ask a service, deny or pass.
local AUTH_CLUSTER = "auth"

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local mode = headers:get("x-mode") or "sync"
  local token = headers:get("authorization")
  if mode == "async" then
    request_handle:httpCall(AUTH_CLUSTER, {[":method"] = "POST", [":path"] = "/audit",
      [":authority"] = "audit"}, "seen " .. headers:get(":path"), 0, true)
    return
  end
  local call_headers = {
    [":method"] = "GET", [":path"] = "/check", [":authority"] = "auth.local",
    ["x-token"] = token or "",
  }
  local cluster = AUTH_CLUSTER
  if mode == "down" then cluster = "auth_down" end
  if mode == "slow" then cluster = "auth_slow" end
  local resp_headers, resp_body
  if mode == "options" then
    resp_headers, resp_body = request_handle:httpCall(cluster, call_headers, nil,
      {timeout_ms = 2000, send_xff = false, return_duplicate_headers = true})
    local g = resp_headers["x-group"]
    request_handle:logInfo("groups: " .. (type(g) == "table" and table.concat(g, "|") or tostring(g)))
  else
    resp_headers, resp_body = request_handle:httpCall(cluster, call_headers, nil, 1000)
  end
  local status = resp_headers[":status"]
  request_handle:logInfo("auth status " .. status .. " body " .. tostring(resp_body))
  if status ~= "200" then
    request_handle:respond({[":status"] = "403", ["x-auth-status"] = status}, "denied: " .. status)
  end
  -- Objects from before the call are dead; fetch the headers again.
  request_handle:headers():add("x-user", resp_headers["x-user"] or "anonymous")
end
