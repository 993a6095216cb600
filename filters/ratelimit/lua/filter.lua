-- ratelimit: token buckets in the shape of Envoy's local_ratelimit filter (see ../schema.json).
--
-- A request becomes descriptors through `rate_limits` (a header's value, the client address, a
-- fixed key); each descriptor that matches a configured one takes a token from that bucket, and
-- the default bucket is used when none matched (or always, by default). Out of tokens: 429.
--
-- SHARING: Envoy runs one Lua state per worker thread and gives Lua no shared memory, so these
-- buckets are per worker: with N workers a client may get up to N times the configured rate.
-- The Wasm version shares its buckets across workers through proxy-wasm shared data.
--
-- Buckets refill continuously like Envoy's (AtomicTokenBucket): tokens_per_fill per fill_interval,
-- never above max_tokens. A bucket is stored as one number, the time at which it was (or would
-- have been) empty: tokens(now) = min(max, (now - empty_at) / T) with T = ms per token.

local META = "envoyext.ratelimit"
local BODY = "local_rate_limited"

local compiled  -- the configuration, compiled on first use (envoyext_config is set at load)
local buckets = {}  -- bucket id -> empty_at (ms); per worker, see SHARING above
local dynamic_values = {}  -- descriptor index -> number of distinct values tracked

local function bucket_spec(tb)
  local seconds = tonumber(string.match(tb.fill_interval, "^([%d.]+)s$"))
  local per_fill = tb.tokens_per_fill or 1
  return {max = tb.max_tokens, ms_per_token = seconds * 1000 / per_fill,
          rate = per_fill / seconds}
end

local function compile()
  local cfg = envoyext_config or {}
  local c = {default = bucket_spec(cfg.token_bucket), rate_limits = cfg.rate_limits or {},
             descriptors = {}, always_default = cfg.always_consume_default_token_bucket ~= false,
             max_dynamic = cfg.max_dynamic_descriptors or 1000,
             headers = cfg.enable_x_ratelimit_headers ~= "OFF"}
  c.default.id = "default"
  for i, d in ipairs(cfg.descriptors or {}) do
    local spec = bucket_spec(d.token_bucket)
    spec.index, spec.entries = i, d.entries
    c.descriptors[i] = spec
  end
  return c
end

local function client_ip(handle)
  local addr = handle:streamInfo():downstreamRemoteAddress() or ""
  -- "1.2.3.4:5678" or "[::1]:5678" -> the address alone, as Envoy's remote_address action has it
  return string.match(addr, "^%[(.*)%]:%d+$") or string.match(addr, "^(.*):%d+$") or addr
end

-- rate_limits -> descriptors: lists of {key, value}. A request_headers action whose header is
-- absent drops the whole descriptor, unless skip_if_absent drops just its entry (Envoy's rule).
local function request_descriptors(handle, c)
  local out = {}
  local headers = handle:headers()
  for _, rl in ipairs(c.rate_limits) do
    local entries, ok = {}, true
    for _, action in ipairs(rl.actions) do
      if action.request_headers then
        local a = action.request_headers
        local v = headers:get(a.header_name)
        if v ~= nil then
          entries[#entries + 1] = {a.descriptor_key, v}
        elseif not a.skip_if_absent then
          ok = false
          break
        end
      elseif action.remote_address then
        entries[#entries + 1] = {"remote_address", client_ip(handle)}
      elseif action.generic_key then
        local a = action.generic_key
        entries[#entries + 1] = {a.descriptor_key or "generic_key", a.descriptor_value}
      end
    end
    if ok and #entries > 0 then out[#out + 1] = entries end
  end
  return out
end

-- The bucket a request descriptor takes its token from: an exact match of keys and values first,
-- else a descriptor whose value-less entries match any value, with a bucket per distinct value.
local function match(c, entries)
  local dynamic
  for _, d in ipairs(c.descriptors) do
    if #d.entries == #entries then
      local exact, fits = true, true
      for i, e in ipairs(d.entries) do
        if e.key ~= entries[i][1] then fits = false break end
        if e.value == nil or e.value == "" then exact = false
        elseif e.value ~= entries[i][2] then fits = false break end
      end
      if fits and exact then return d, tostring(d.index) end
      if fits and not dynamic then dynamic = d end
    end
  end
  if not dynamic then return nil end
  local parts = {tostring(dynamic.index)}
  for i, e in ipairs(dynamic.entries) do
    if e.value == nil or e.value == "" then parts[#parts + 1] = entries[i][2] end
  end
  local id = table.concat(parts, "\0")
  if buckets[id] == nil then
    -- Bound memory: past max_dynamic values, new ones share one overflow bucket.
    local n = dynamic_values[dynamic.index] or 0
    if n >= c.max_dynamic then return dynamic, dynamic.index .. "\0*overflow*" end
    dynamic_values[dynamic.index] = n + 1
  end
  return dynamic, id
end

-- Take one token. Returns allowed, remaining tokens, ms until the next token.
local function consume(spec, id, now)
  local T, max = spec.ms_per_token, spec.max
  local empty_at = math.max(buckets[id] or -math.huge, now - max * T)
  if now - empty_at < T then
    return false, 0, empty_at + T - now
  end
  empty_at = empty_at + T
  buckets[id] = empty_at
  local remaining = math.floor((now - empty_at) / T)
  return true, remaining, remaining >= 1 and 0 or empty_at + T - now
end

local function rate_headers(spec, remaining, wait_ms)
  return {["x-ratelimit-limit"] = tostring(spec.max), ["x-ratelimit-remaining"] = tostring(remaining),
          ["x-ratelimit-reset"] = tostring(math.ceil(wait_ms / 1000))}
end

function envoy_on_request(handle)
  compiled = compiled or compile()
  local c = compiled
  local now = handle:timestamp()
  local matched = {}
  for _, entries in ipairs(request_descriptors(handle, c)) do
    local spec, id = match(c, entries)
    if spec then matched[#matched + 1] = {spec = spec, id = id, order = #matched} end
  end
  -- Like Envoy: the slowest-filling bucket first, so it is the one reported in the headers.
  table.sort(matched, function(a, b)
    return a.spec.rate < b.spec.rate or (a.spec.rate == b.spec.rate and a.order < b.order)
  end)
  if #matched == 0 or c.always_default then
    matched[#matched + 1] = {spec = c.default, id = "default", default = true}
  end
  local report
  for i, m in ipairs(matched) do
    local ok, remaining, wait_ms = consume(m.spec, m.id, now)
    if not ok then
      local headers = {[":status"] = "429", ["content-type"] = "text/plain"}
      if c.headers then
        for k, v in pairs(rate_headers(m.spec, remaining, wait_ms)) do headers[k] = v end
        headers["retry-after"] = tostring(math.max(1, math.ceil(wait_ms / 1000)))
      end
      handle:streamInfo():dynamicMetadata():set(META, "limited", true)
      handle:respond(headers, BODY)
      return
    end
    -- Envoy reports the first matched descriptor's bucket, the default one only if none matched.
    if i == 1 then report = rate_headers(m.spec, remaining, wait_ms) end
  end
  if c.headers and report then
    for k, v in pairs(report) do
      handle:streamInfo():dynamicMetadata():set(META, k, v)
    end
  end
end

function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata():get(META)
  if meta == nil or meta.limited then return end  -- a 429 of ours carries its headers already
  for _, k in ipairs({"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}) do
    if meta[k] then handle:headers():replace(k, meta[k]) end
  end
end
