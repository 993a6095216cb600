-- csrf: Envoy's envoy.filters.http.csrf as a Lua filter.
--
-- A state-changing request (POST, PUT, DELETE, PATCH) must come from the page's own origin: the
-- host and port of its Origin header (or, without one, of its Referer) must equal the request's
-- Host, or match one of `additional_origins`. Otherwise the request is answered 403
-- "Invalid origin" -- unless the policy is only in shadow mode, where it is merely counted.
-- The configuration is Envoy's CsrfPolicy JSON (see ../schema.json), handed over by envoyext as
-- the global `envoyext_config`.

local MODIFY_METHODS = { POST = true, PUT = true, DELETE = true, PATCH = true }
local DENOMINATORS = { HUNDRED = 100, TEN_THOUSAND = 10000, MILLION = 1000000 }

---------------------------------------------------------------------------------------------
-- The policy

local function fractional_percent(p, default)
  -- RuntimeFractionalPercent: the runtime key cannot be read from Lua; default_value decides.
  if p == nil then return default end
  local v = p.default_value or {}
  return { numerator = v.numerator or 0, denominator = DENOMINATORS[v.denominator or "HUNDRED"] or 100 }
end

local function load_policy(cfg)
  cfg = cfg or {}
  local policy = {
    enabled = fractional_percent(cfg.filter_enabled, { numerator = 100, denominator = 100 }),
    shadow = fractional_percent(cfg.shadow_enabled, nil),
    origins = {},
  }
  for i, m in ipairs(cfg.additional_origins or {}) do
    policy.origins[i] = pw_match.string_matcher(m, "additional_origins[" .. (i - 1) .. "]")
  end
  return policy
end

local policy, policy_error -- built on first use: the config global is set after this file runs

local function sampled(p)
  if p == nil or p.numerator <= 0 then return false end
  if p.numerator >= p.denominator then return true end
  return math.random(0, p.denominator - 1) < p.numerator
end

---------------------------------------------------------------------------------------------
-- Origins

-- "host[:port]" of an absolute URL, as Envoy's Http::Utility::Url reports it (no userinfo, no
-- default-port folding, case kept). Anything that is not an absolute URL is returned as is, like
-- Envoy does, so `Origin: example.com` still compares equal to `Host: example.com`.
local function host_and_port(value)
  if value == nil or value == "" then return "" end
  local rest = value:match("^%a+://(.*)$")
  if not rest then return value end
  local authority = rest:match("^[^/?#]*")
  local host = authority:match("^[^@]*@(.*)$") or authority
  if host:match("^[%w%-%._~]+$") or host:match("^[%w%-%._~]+:%d+$")
      or host:match("^%[[%x:%.]+%]$") or host:match("^%[[%x:%.]+%]:%d+$") then
    return host
  end
  return value
end

-- Where the request says it comes from. An opaque origin (`Origin: null`, sent by sandboxed
-- frames and privacy-sensitive redirects) counts as no origin, as in Envoy 1.40, and does not
-- fall back to the Referer.
local function source_origin(headers)
  local origin = headers:get("origin")
  if origin == "null" then return "" end
  if origin ~= nil and origin ~= "" then return host_and_port(origin) end
  return host_and_port(headers:get("referer"))
end

local function target_origin(headers)
  local host = headers:get(":authority")
  if host == nil or host == "" then return "" end
  return host_and_port((headers:get(":scheme") or "http") .. "://" .. host)
end

-- Same origin as the target, or one of additional_origins.
local function origin_allowed(p, source, target)
  if source == target then return true end
  for _, matches in ipairs(p.origins) do
    if matches(source) then return true end
  end
  return false
end

local function count(handle, name)
  handle:stats():counter("csrf." .. name):inc()
end

function envoy_on_request(handle)
  if policy == nil and policy_error == nil then
    local ok, result = pcall(load_policy, envoyext_config)
    if ok then policy = result else policy_error = result end
  end
  if policy_error then
    -- A broken policy must not silently let forged requests through.
    handle:logErr("csrf: invalid configuration: " .. policy_error)
    handle:respond({ [":status"] = "500", ["content-type"] = "text/plain" }, "csrf: invalid configuration")
    return
  end

  local enforce = sampled(policy.enabled)
  local shadow = sampled(policy.shadow)
  if not enforce and not shadow then return end

  local headers = handle:headers()
  if not MODIFY_METHODS[headers:get(":method") or ""] then return end

  -- As Envoy: a missing source origin counts missing_source_origin and is then still compared
  -- (an empty source never equals a non-empty Host), so it usually counts request_invalid too.
  local source = source_origin(headers)
  local valid = source ~= ""
  if not valid then count(handle, "missing_source_origin") end
  if not origin_allowed(policy, source, target_origin(headers)) then
    valid = false
    count(handle, "request_invalid")
  end
  if valid then
    count(handle, "request_valid")
    return
  end

  if not enforce then return end -- shadow mode: counted, not blocked
  handle:respond({ [":status"] = "403", ["content-type"] = "text/plain" }, "Invalid origin")
end
