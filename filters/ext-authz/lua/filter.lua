-- ext-authz: Envoy's envoy.filters.http.ext_authz (HTTP authorization service) as a Lua filter.
--
-- Every request is first sent, without its body, to an authorization service (a cluster).
-- A 200 answer lets it through, carrying chosen headers of that answer upstream; any other 1xx-4xx
-- answer is returned to the client as is (status, body, chosen headers); a 5xx, a timeout or a
-- connection failure is an error: 403 (or `status_on_error`) unless `failure_mode_allow`.
-- The configuration is Envoy's ExtAuthz JSON for an http_service (see ../schema.json), handed
-- over by envoyext as the global `envoyext_config`.

local AUTH_HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"
-- Headers of a denial that always reach the client when allowed_client_headers is set (Envoy's).
local DENIED_DEFAULTS = { "content-length", "www-authenticate", "location" }

-- A ListStringMatcher ({patterns: [...]}) as one predicate; nil when the list is absent or empty.
-- Header names are matched by Envoy's StringMatcher (the pw_match library, filter.yaml's lua_libraries);
-- `field` names the list in errors.
local function list_matcher(list, field, extra_exact)
  local matchers = {}
  for i, m in ipairs((list or {}).patterns or {}) do
    matchers[#matchers + 1] = pw_match.string_matcher(m, field .. ".patterns[" .. (i - 1) .. "]")
  end
  if #matchers == 0 then return nil end
  for _, name in ipairs(extra_exact or {}) do matchers[#matchers + 1] = pw_match.string_matcher(name, field) end
  return function(name)
    for _, matches in ipairs(matchers) do if matches(name) then return true end end
    return false
  end
end

local function never() return false end

-- google.protobuf.Duration in JSON ("0.25s") as whole milliseconds.
local function duration_ms(text)
  local seconds = tonumber((tostring(text or "")):match("^(%d*%.?%d+)s$"))
  if not seconds or seconds <= 0 then error("http_service.server_uri.timeout: want a duration like \"0.25s\"", 0) end
  return math.max(1, math.floor(seconds * 1000 + 0.5))
end

local function load_config(cfg)
  cfg = cfg or {}
  local svc = cfg.http_service or {}
  local uri = svc.server_uri or {}
  if type(uri.cluster) ~= "string" or uri.cluster == "" then
    error("http_service.server_uri.cluster: name the authorization service's cluster", 0)
  end
  local request, response = svc.authorization_request or {}, svc.authorization_response or {}
  local allowed = list_matcher(cfg.allowed_headers, "allowed_headers") or never
  local headers_to_add = {}
  for _, h in ipairs(request.headers_to_add or {}) do headers_to_add[#headers_to_add + 1] = { h.key:lower(), h.value or "" } end
  return {
    cluster = uri.cluster,
    timeout_ms = duration_ms(uri.timeout),
    path_prefix = svc.path_prefix or "",
    -- Authorization, Method, Path and Host always go to the service, plus the allowed headers.
    request_allowed = function(name) return name == "authorization" or allowed(name) end,
    headers_to_add = headers_to_add,
    upstream = list_matcher(response.allowed_upstream_headers,
                            "http_service.authorization_response.allowed_upstream_headers") or never,
    -- Without a list every header of a denial reaches the client (but Host).
    client = list_matcher(response.allowed_client_headers, "http_service.authorization_response.allowed_client_headers",
                          DENIED_DEFAULTS)
        or function(name) return name ~= "host" end,
    client_on_success = list_matcher(response.allowed_client_headers_on_success,
                                     "http_service.authorization_response.allowed_client_headers_on_success") or never,
    failure_mode_allow = cfg.failure_mode_allow == true,
    status_on_error = tostring((cfg.status_on_error or {}).code or 403),
  }
end

local config, config_error -- built on first use: the config global is set after this file runs

local function count(handle, name)
  handle:stats():counter("ext_authz." .. name):inc()
end

-- Each (name, value) of an httpCall answer, repeated headers included.
local function each_header(headers, fn)
  for name, value in pairs(headers) do
    if type(value) == "table" then
      for _, v in ipairs(value) do fn(name, v) end
    else
      fn(name, value)
    end
  end
end

-- The check request: the client's method, path (behind path_prefix) and host, no body, and the
-- allowed headers, repeated ones joined with "," as Envoy's CheckRequest carries them.
local function check_request(cfg, headers)
  local out = {
    [":method"] = headers:get(":method"),
    [":path"] = cfg.path_prefix .. (headers:get(":path") or "/"),
    [":authority"] = headers:get(":authority"),
    ["content-length"] = "0",
  }
  for name, value in pairs(headers) do
    if name:sub(1, 1) ~= ":" and name ~= "content-length" and cfg.request_allowed(name) then
      out[name] = out[name] and (out[name] .. "," .. value) or value
    end
  end
  for _, h in ipairs(cfg.headers_to_add) do out[h[1]] = h[2] end
  return out
end

local function allow(handle, cfg, answer)
  local headers = handle:headers()
  local remove = {}
  each_header(answer, function(name, value)
    if name:sub(1, 1) == ":" then return end
    if name == AUTH_HEADERS_TO_REMOVE then
      for victim in value:gmatch("[^,%s]+") do remove[#remove + 1] = victim:lower() end
    elseif cfg.upstream(name) then
      headers:replace(name, value)
    end
  end)
  for _, name in ipairs(remove) do headers:remove(name) end
  -- allowed_client_headers_on_success go onto the response: kept in the stream's metadata.
  local on_success = {}
  each_header(answer, function(name, value)
    if name:sub(1, 1) ~= ":" and name ~= AUTH_HEADERS_TO_REMOVE and cfg.client_on_success(name) then
      on_success[#on_success + 1] = { name, value }
    end
  end)
  if #on_success > 0 then
    handle:streamInfo():dynamicMetadata():set("envoyext.ext_authz", "response_headers", on_success)
  end
end

local function deny(handle, cfg, answer, body)
  local reply = { [":status"] = answer[":status"] }
  each_header(answer, function(name, value)
    if name:sub(1, 1) ~= ":" and name ~= AUTH_HEADERS_TO_REMOVE and cfg.client(name) then
      local have = reply[name]
      if have == nil then reply[name] = value
      elseif type(have) == "table" then have[#have + 1] = value
      else reply[name] = { have, value } end
    end
  end)
  handle:respond(reply, body or "")
end

function envoy_on_request(handle)
  if config == nil and config_error == nil then
    local ok, result = pcall(load_config, envoyext_config)
    if ok then config = result else config_error = result end
  end
  if config_error then
    -- An authorization filter that cannot work must not let requests through.
    handle:logErr("ext-authz: invalid configuration: " .. config_error)
    handle:respond({ [":status"] = "500", ["content-type"] = "text/plain" }, "ext-authz: invalid configuration")
    return
  end
  local cfg = config

  local answer, body = handle:httpCall(cfg.cluster, check_request(cfg, handle:headers()), "", {
    timeout_ms = cfg.timeout_ms,
    send_xff = false,                -- Envoy's ext_authz sends no x-forwarded-for either
    return_duplicate_headers = true, -- several set-cookie in a denial all reach the client
  })
  -- Envoy's Lua httpCall reports a reset as a made-up 503 and a timeout as the router's 504.
  local status = tonumber(answer[":status"]) or 503

  if status == 200 then
    count(handle, "ok")
    allow(handle, cfg, answer)
  elseif status >= 500 then
    count(handle, "error")
    if cfg.failure_mode_allow then
      count(handle, "failure_mode_allowed")
      return
    end
    handle:respond({ [":status"] = cfg.status_on_error }, "")
  else
    count(handle, "denied")
    deny(handle, cfg, answer, body)
  end
end

function envoy_on_response(handle)
  local stored = handle:streamInfo():dynamicMetadata():get("envoyext.ext_authz")
  if stored == nil or stored.response_headers == nil then return end
  local headers = handle:headers()
  for _, pair in ipairs(stored.response_headers) do headers:add(pair[1], pair[2]) end
end
