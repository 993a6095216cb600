-- custom-metrics: a request counter and a latency histogram, labelled from request and response
-- attributes chosen in the configuration (the global `envoyext_config`, see ../schema.json).
--
-- Labels are encoded in the stat name the way Istio encodes istio_requests_total's:
--   envoyext_requests_total.method=.=GET;.;response_code=.=200;.;
-- and filter.yaml's stats_tags (Envoy's stats_config) cut every `name=.=value;.;` out of the name
-- into a real tag, so /stats/prometheus shows envoy_http_lua_envoyext_requests_total{method="GET",...}.
-- Envoy's Lua stats API puts every stat in the Lua filter's scope (http.<hcm prefix>.lua.), hence
-- the envoy_http_lua_ Prometheus prefix; the Wasm version's metrics have no prefix.
--
-- Everything is recorded once per request, when the response headers pass: the response code is
-- known then, and the duration is the time to response headers.

local METHODS = {GET = true, HEAD = true, POST = true, PUT = true, DELETE = true, CONNECT = true,
                 OPTIONS = true, TRACE = true, PATCH = true}
local MAX_VALUE = 64
local META = "envoyext.custom_metrics"

-- Label values end up inside a stat name: keep them to characters that cannot break the
-- `name=.=value;.;` encoding or Envoy's name parsing, and bounded in length.
local function clean(v)
  v = string.sub(v, 1, MAX_VALUE)
  return (string.gsub(v, "[^%w_%-/:@+]", "_"))
end

local function path_prefix(path, label)
  path = string.match(path or "", "^[^?#]*") or ""
  if label.prefixes then
    for _, p in ipairs(label.prefixes) do
      if string.sub(path, 1, #p) == p then return p end
    end
    return "other"
  end
  local out, n = "", 0
  for seg in string.gmatch(path, "/[^/]*") do
    if n == (label.depth or 1) or seg == "/" then break end
    out, n = out .. seg, n + 1
  end
  return out == "" and "/" or out
end

local function header_value(value, label)
  if value == nil then return "unknown" end
  if label.values then
    for _, allowed in ipairs(label.values) do
      if value == allowed then return value end
    end
    return "other"
  end
  return value
end

-- Request-side values are taken while the request headers pass and kept for the response in the
-- stream's dynamic metadata (Lua has no per-stream variables; its globals are per worker).
local function request_value(label, req)
  local from = label.from
  if from == "method" then
    local m = req:get(":method") or ""
    return METHODS[m] and m or "OTHER"
  elseif from == "path_prefix" then
    return path_prefix(req:get(":path"), label)
  elseif from == "header" then
    return header_value(req:get(label.header), label)
  end
  return nil
end

local function response_value(label, status, route)
  local from = label.from
  if from == "route" then
    return (route ~= nil and route ~= "") and route or "unknown"
  elseif from == "response_code" then
    return status
  elseif from == "response_code_class" then
    return string.sub(status, 1, 1) .. "xx"
  end
  -- upstream_cluster: Envoy's Lua API has no accessor for the upstream cluster.
  return "unknown"
end

-- The configuration, compiled on first use (once per Lua state, not per request).
-- A label name listed twice is kept once: two tags of one name would break the stat name.
local compiled

local function config()
  if compiled == nil then
    local cfg = envoyext_config or {}
    local labels, seen = {}, {}
    for _, label in ipairs(cfg.labels or {}) do
      if not seen[label.name] then
        seen[label.name] = true
        labels[#labels + 1] = label
      end
    end
    compiled = {prefix = cfg.prefix or "envoyext", labels = labels}
  end
  return compiled
end

function envoy_on_request(handle)
  local meta = handle:streamInfo():dynamicMetadata()
  local req = handle:headers()
  for i, label in ipairs(config().labels) do
    local v = request_value(label, req)
    if v ~= nil then meta:set(META, tostring(i), v) end
  end
  meta:set(META, "start_ms", handle:timestamp())
end

function envoy_on_response(handle)
  local cfg = config()
  local info = handle:streamInfo()
  local meta = info:dynamicMetadata():get(META) or {}
  local status = handle:headers():get(":status") or "0"
  local route = info:routeName()
  local parts = {}
  for i, label in ipairs(cfg.labels) do
    local v = meta[tostring(i)] or response_value(label, status, route)
    parts[#parts + 1] = label.name .. "=.=" .. clean(v) .. ";.;"
  end
  local suffix = #parts > 0 and ("." .. table.concat(parts)) or ""
  local stats = handle:stats()
  stats:counter(cfg.prefix .. "_requests_total" .. suffix):inc()
  if meta.start_ms then
    local ms = handle:timestamp() - meta.start_ms
    stats:histogram(cfg.prefix .. "_request_duration_milliseconds" .. suffix):recordValue(ms)
  end
end
