-- fault: inject delays and aborts, as Envoy's envoy.filters.http.fault and Istio's
-- VirtualService `fault` do. Configuration: ../schema.json (a Lua table in `envoyext_config`).
--
-- Lua has no timers, so a delay is an httpCall to `delay_cluster` (a cluster that holds
-- requests longer than any delay) with the delay as its timeout: the call times out after
-- exactly that long and this stream's coroutine resumes. Without that cluster a delay is
-- skipped and an error is logged; aborts need nothing.

local DELAY_HEADER = "x-envoy-fault-delay-request"
local DELAY_PERCENT_HEADER = "x-envoy-fault-delay-request-percentage"
local ABORT_HEADER = "x-envoy-fault-abort-request"
local ABORT_PERCENT_HEADER = "x-envoy-fault-abort-request-percentage"
local ABORT_BODY = "fault filter abort" -- Envoy's own local-reply body for an injected abort

-- Each worker has its own Lua state; seed each differently so they do not pick in lockstep.
math.randomseed(os.time() + math.floor(os.clock() * 1000000))

-- The configuration, compiled on first use (once per Lua state, not per request).
local compiled

-- Envoy's HeaderMatcher: `present`, or a StringMatcher (the pw_match library, filter.yaml's lua_libraries)
-- on the header's value.
local function header_matcher(m, i)
  local out = { name = m.name, present = m.present, invert_match = m.invert_match }
  if m.present == nil then out.value_matches = pw_match.string_matcher(m, "headers[" .. (i - 1) .. "]") end
  return out
end

local function compile(raw)
  local cfg = {
    delay = raw.delay,
    abort = raw.abort,
    headers = {},
    delay_cluster = raw.delay_cluster or "fault-delay",
  }
  for i, m in ipairs(raw.headers or {}) do cfg.headers[i] = header_matcher(m, i) end
  -- Istio's default: fault every matching request. (Not a loop over {delay, abort}: ipairs
  -- would stop at a missing delay.)
  if cfg.delay and cfg.delay.percentage == nil then
    cfg.delay.percentage = 100
  end
  if cfg.abort and cfg.abort.percentage == nil then
    cfg.abort.percentage = 100
  end
  return cfg
end

local function config()
  if compiled == nil then
    compiled = compile(envoyext_config or {})
  end
  return compiled
end

-- The first value of an untrusted control header: Envoy reads only that one.
local function first_value(headers, name)
  if headers.getAtIndex then
    return headers:getAtIndex(name, 0)
  end
  return headers:get(name)
end

-- A non-negative integer as absl::SimpleAtoi accepts it (surrounding blanks allowed), or nil.
local function parse_uint(value)
  local digits = value and string.match(value, "^%s*%+?(%d+)%s*$")
  return digits and tonumber(digits) or nil
end

-- Envoy's HeaderMatcher (present, or exact/prefix/suffix/contains/safe_regex; invert_match) on
-- one header. An absent header fails every value matcher, inverted or not; only `present` can
-- match it.
local function header_matches(headers, m)
  local value = headers:get(m.name)
  local ok
  if m.present ~= nil then
    ok = (value ~= nil) == m.present
  elseif value == nil then
    return false
  else
    ok = m.value_matches(value)
  end
  if m.invert_match then
    return not ok
  end
  return ok
end

-- The percentage for this request: a header may lower the configured one, never raise it
-- (Envoy's HeaderPercentageProvider; only for the header-controlled faults).
local function percentage(fault, headers, percent_header, header_controlled)
  if header_controlled then
    local wanted = parse_uint(first_value(headers, percent_header))
    if wanted ~= nil and wanted < fault.percentage then
      return wanted
    end
  end
  return fault.percentage
end

local function selected(percent)
  return math.random() * 100 < percent
end

-- Delay in ms for this request, or nil (not selected, no/invalid header, or zero).
local function delay_ms(delay, headers)
  if delay == nil or not selected(percentage(delay, headers, DELAY_PERCENT_HEADER, delay.header_delay)) then
    return nil
  end
  local ms = delay.fixed_delay_ms
  if delay.header_delay then
    ms = parse_uint(first_value(headers, DELAY_HEADER))
  end
  if ms == nil or ms <= 0 then
    return nil
  end
  return ms
end

-- Abort status for this request, or nil. Rolled after any delay, as Envoy does.
local function abort_status(abort, headers)
  if abort == nil or not selected(percentage(abort, headers, ABORT_PERCENT_HEADER, abort.header_abort)) then
    return nil
  end
  if abort.header_abort then
    local code = parse_uint(first_value(headers, ABORT_HEADER))
    if code == nil or code < 200 or code >= 600 then
      return nil
    end
    return code
  end
  return abort.http_status
end

local function count(handle, name)
  -- handle:stats() exists since Envoy 1.3x; counters land under http.<prefix>.lua.<name>.
  if handle.stats then
    handle:stats():counter(name):inc()
  end
end

-- Wait `ms` without blocking the worker: an httpCall that cannot finish sooner than its timeout.
local function sleep(handle, cluster, ms)
  local ok, headers = pcall(handle.httpCall, handle, cluster,
    { [":method"] = "GET", [":path"] = "/fault-delay", [":authority"] = cluster }, "", ms)
  if not ok then
    handle:logErr("fault: cannot delay, no usable delay_cluster '" .. cluster .. "': " .. tostring(headers))
    return false
  end
  local status = headers and headers[":status"]
  if status ~= "504" then
    -- The cluster answered (or failed) before the timeout: the delay was shorter than asked.
    handle:logWarn("fault: delay_cluster '" .. cluster .. "' answered " .. tostring(status) ..
      " before " .. ms .. "ms; the delay was cut short")
  end
  return true
end

function envoy_on_request(handle)
  local cfg = config()
  local headers = handle:headers()
  for _, m in ipairs(cfg.headers) do
    if not header_matches(headers, m) then
      return
    end
  end

  local ms = delay_ms(cfg.delay, headers)
  if ms ~= nil then
    handle:logDebug("fault: delaying request " .. ms .. "ms")
    count(handle, "fault.delays_injected")
    if sleep(handle, cfg.delay_cluster, ms) then
      handle:logDebug("fault: delay of " .. ms .. "ms elapsed")
    end
    -- Envoy invalidates handle objects across a yield (the httpCall): fetch the headers anew.
    headers = handle:headers()
  end

  local status = abort_status(cfg.abort, headers)
  if status ~= nil then
    handle:logDebug("fault: aborting request with " .. status)
    count(handle, "fault.aborts_injected")
    handle:respond({ [":status"] = tostring(status) }, ABORT_BODY)
  end
end
