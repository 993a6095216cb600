-- cors: Cross-Origin Resource Sharing, as Envoy's envoy.filters.http.cors with one CorsPolicy
-- and Istio's VirtualService corsPolicy. Configuration: ../schema.json (`envoyext_config`).
--
-- A preflight (OPTIONS with Origin and Access-Control-Request-Method) from an allowed origin
-- is answered here with 200; other requests from an allowed origin go upstream and get
-- access-control-allow-origin (the request's origin, echoed), -allow-credentials and
-- -expose-headers on the way back. A request from any other origin gets no CORS headers.

local METADATA_NS = "envoyext.cors" -- carries the allowed origin from request to response

-- ---------------------------------------------------------------------------------------------
-- Configuration, compiled on first use (once per Lua state, not per request).

local function joined(v)
  if type(v) == "table" then return table.concat(v, ",") end
  return v or ""
end

local compiled

local function config(handle)
  if compiled == nil then
    local raw = envoyext_config or {}
    local ok, err = pcall(function()
      local matchers = {}
      for i, spec in ipairs(raw.allow_origins or {}) do
        matchers[i] = pw_match.string_matcher(spec, "allow_origins[" .. (i - 1) .. "]")
      end
      compiled = {
        origins = matchers,
        methods = joined(raw.allow_methods),
        headers = joined(raw.allow_headers),
        expose = joined(raw.expose_headers),
        max_age = raw.max_age ~= nil and tostring(raw.max_age) or "",
        credentials = raw.allow_credentials == true,
        private_network = raw.allow_private_network_access == true,
        forward = raw.forward_not_matching_preflights ~= false,
      }
    end)
    if not ok then
      handle:logErr("cors: invalid configuration, allowing no origin: " .. tostring(err))
      compiled = { origins = {}, methods = "", headers = "", expose = "", max_age = "",
                   credentials = false, private_network = false, forward = true }
    end
  end
  return compiled
end

-- Envoy asks each matcher about "*" first: a policy allowing "*" allows every origin.
local function origin_allowed(cfg, origin)
  for _, m in ipairs(cfg.origins) do
    if m("*") or m(origin) then return true end
  end
  return false
end

local function count(handle, name)
  if handle.stats then handle:stats():counter(name):inc() end -- http.<prefix>.lua.<name>
end

function envoy_on_request(handle)
  local cfg = config(handle)
  local headers = handle:headers()
  local origin = headers:get("origin")
  if origin == nil or origin == "" then return end

  local allowed = origin_allowed(cfg, origin)
  count(handle, allowed and "cors.origin_valid" or "cors.origin_invalid")
  if allowed then
    handle:streamInfo():dynamicMetadata():set(METADATA_NS, "origin", origin)
  end

  local method = headers:get("access-control-request-method")
  if headers:get(":method") ~= "OPTIONS" or method == nil or method == "" then
    return -- an actual request: headers are added to its response
  end
  if not allowed and cfg.forward then
    return -- a preflight that is not ours to answer: the upstream sees it
  end

  local reply = { [":status"] = "200" }
  if allowed then
    reply["access-control-allow-origin"] = origin
    if cfg.expose ~= "" then reply["access-control-expose-headers"] = cfg.expose end
  end
  if cfg.credentials then reply["access-control-allow-credentials"] = "true" end
  if cfg.methods ~= "" then
    reply["access-control-allow-methods"] = cfg.methods == "*" and method or cfg.methods
  end
  if cfg.headers ~= "" then
    reply["access-control-allow-headers"] =
      cfg.headers == "*" and (headers:get("access-control-request-headers") or "") or cfg.headers
  end
  if cfg.max_age ~= "" then reply["access-control-max-age"] = cfg.max_age end
  if cfg.private_network and headers:get("access-control-request-private-network") == "true" then
    reply["access-control-allow-private-network"] = "true"
  end
  handle:respond(reply, "")
end

function envoy_on_response(handle)
  local md = handle:streamInfo():dynamicMetadata():get(METADATA_NS)
  local origin = md and md.origin
  if origin == nil then return end
  local cfg = config(handle)
  local headers = handle:headers()
  headers:replace("access-control-allow-origin", origin)
  if cfg.credentials then headers:replace("access-control-allow-credentials", "true") end
  if cfg.expose ~= "" then headers:replace("access-control-expose-headers", cfg.expose) end
end
