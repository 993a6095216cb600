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
-- A small regular-expression engine for `safe_regex` (Envoy uses RE2; Lua patterns are not
-- regexes). Supported: literals, `.`, `[...]` classes with ranges and negation, \d \w \s (and
-- upper-case negations), escaped punctuation, groups `( )` / `(?: )`, `|`, `* + ?` and `{n,m}`,
-- `^` and `$`. Like Envoy's matcher it must match the whole string. Anything else is rejected
-- when the configuration is first used. Matching never revisits a (state, position) pair, so it
-- is linear in the input, like RE2: a hostile Origin cannot make it backtrack exponentially.

local function byte_set(chars)
  local s = {}
  for i = 1, #chars do s[chars:byte(i)] = true end
  return s
end

local DIGIT, WORD, SPACE = {}, {}, byte_set(" \t\n\r\f\v")
for b = 48, 57 do DIGIT[b] = true; WORD[b] = true end
for b = 65, 90 do WORD[b] = true; WORD[b + 32] = true end
WORD[95] = true

local function negate(set)
  local out = {}
  for b = 0, 255 do if not set[b] then out[b] = true end end
  return out
end

local CLASS_ESCAPES = { d = DIGIT, w = WORD, s = SPACE }

local function parse_regex(re)
  local pos = 1
  local function peek() return re:sub(pos, pos) end
  local function fail(msg) error(("regex %q: %s at offset %d"):format(re, msg, pos - 1), 0) end

  -- \x inside or outside a class: a set for \d \w \s (\D \W \S), else the literal byte.
  local function escape()
    local c = re:sub(pos, pos)
    pos = pos + 1
    if c == "" then fail("trailing backslash") end
    local set = CLASS_ESCAPES[c:lower()]
    if set then return nil, (c == c:lower()) and set or negate(set) end
    if c:match("%w") then
      local named = { n = "\n", t = "\t", r = "\r", f = "\f", v = "\v" }
      if named[c] then return named[c]:byte() end
      fail("unsupported escape \\" .. c)
    end
    return c:byte()
  end

  local function class()
    local set, negated = {}, false
    if peek() == "^" then negated = true; pos = pos + 1 end
    local first = true
    while first or peek() ~= "]" do
      first = false
      if peek() == "" then fail("missing ]") end
      local lo, loset
      if peek() == "\\" then pos = pos + 1; lo, loset = escape()
      else lo = re:byte(pos); pos = pos + 1 end
      if loset then
        for b in pairs(loset) do set[b] = true end
      elseif peek() == "-" and re:sub(pos + 1, pos + 1) ~= "]" and re:sub(pos + 1, pos + 1) ~= "" then
        pos = pos + 1
        local hi, hiset
        if peek() == "\\" then pos = pos + 1; hi, hiset = escape() else hi = re:byte(pos); pos = pos + 1 end
        if hiset or hi < lo then fail("bad range") end
        for b = lo, hi do set[b] = true end
      else
        set[lo] = true
      end
    end
    pos = pos + 1
    return negated and negate(set) or set
  end

  local alternation
  local function atom()
    local c = peek()
    pos = pos + 1
    if c == "(" then
      if re:sub(pos, pos + 1) == "?:" then pos = pos + 2
      elseif peek() == "?" then fail("unsupported group flag") end
      local node = alternation()
      if peek() ~= ")" then fail("missing )") end
      pos = pos + 1
      return node
    elseif c == "[" then return { t = "set", set = class() }
    elseif c == "." then return { t = "set", set = negate(byte_set("\n")) }
    elseif c == "^" then return { t = "bol" }
    elseif c == "$" then return { t = "eol" }
    elseif c == "\\" then
      local b, set = escape()
      return set and { t = "set", set = set } or { t = "char", c = b }
    elseif c:match("[%*%+%?{]") then fail("nothing to repeat")
    end
    return { t = "char", c = c:byte() }
  end

  local function repetition()
    local node = atom()
    while true do
      local c = peek()
      local lo, hi
      if c == "*" then lo, hi = 0, nil; pos = pos + 1
      elseif c == "+" then lo, hi = 1, nil; pos = pos + 1
      elseif c == "?" then lo, hi = 0, 1; pos = pos + 1
      elseif c == "{" then
        local a, comma, b, close = re:match("^{(%d+)(,?)(%d*)()}", pos)
        if not a then fail("bad repetition") end
        lo = tonumber(a)
        hi = comma == "" and lo or (b ~= "" and tonumber(b) or nil)
        if lo > 100 or (hi and (hi > 100 or hi < lo)) then fail("repetition out of range") end
        pos = close + 1
      else
        return node
      end
      if peek() == "?" then pos = pos + 1 end -- lazy: same result for a whole-string match
      if peek():match("^[%*%+%?{]$") then fail("bad repetition operator") end -- as RE2
      node = { t = "repeat", node = node, lo = lo, hi = hi }
    end
  end

  local function sequence()
    local items = {}
    while peek() ~= "" and peek() ~= "|" and peek() ~= ")" do items[#items + 1] = repetition() end
    return { t = "cat", items = items }
  end

  alternation = function()
    local node = sequence()
    while peek() == "|" do
      pos = pos + 1
      node = { t = "alt", a = node, b = sequence() }
    end
    return node
  end

  local tree = alternation()
  if pos <= #re then fail("unbalanced )") end
  return tree
end

-- The parse tree as a program for a backtracking machine (the classic Thompson layout).
local function compile_regex(re)
  local prog = {}
  local function emit(ins) prog[#prog + 1] = ins; return #prog end
  local gen
  gen = function(n)
    if n.t == "char" or n.t == "set" or n.t == "bol" or n.t == "eol" then emit(n)
    elseif n.t == "cat" then for _, item in ipairs(n.items) do gen(item) end
    elseif n.t == "alt" then
      local split = emit({ t = "split" })
      prog[split].x = #prog + 1; gen(n.a)
      local jmp = emit({ t = "jmp" })
      prog[split].y = #prog + 1; gen(n.b)
      prog[jmp].x = #prog + 1
    elseif n.t == "repeat" then
      for _ = 1, n.lo do gen(n.node) end
      if n.hi == nil then -- x*: L: split body, out; body; jmp L
        local split = emit({ t = "split" })
        prog[split].x = #prog + 1; gen(n.node)
        emit({ t = "jmp", x = split })
        prog[split].y = #prog + 1
      else
        for _ = n.lo + 1, n.hi do
          local split = emit({ t = "split" })
          prog[split].x = #prog + 1; gen(n.node)
          prog[split].y = #prog + 1
        end
      end
    end
  end
  gen(parse_regex(re))
  emit({ t = "match" })
  return prog
end

local function regex_full_match(prog, s)
  local n = #s
  local visited = {}
  local stack = { 1, 1 } -- pairs of (pc, pos)
  while #stack > 0 do
    local pos = table.remove(stack)
    local pc = table.remove(stack)
    while true do
      local key = pc * (n + 2) + pos
      if visited[key] then break end
      visited[key] = true
      local ins = prog[pc]
      local t = ins.t
      if t == "char" then
        if s:byte(pos) ~= ins.c then break end
        pc, pos = pc + 1, pos + 1
      elseif t == "set" then
        local b = s:byte(pos)
        if not b or not ins.set[b] then break end
        pc, pos = pc + 1, pos + 1
      elseif t == "split" then
        stack[#stack + 1] = ins.y; stack[#stack + 1] = pos
        pc = ins.x
      elseif t == "jmp" then pc = ins.x
      elseif t == "bol" then if pos ~= 1 then break end; pc = pc + 1
      elseif t == "eol" then if pos ~= n + 1 then break end; pc = pc + 1
      else -- match: only the whole string counts
        if pos == n + 1 then return true end
        break
      end
    end
  end
  return false
end

---------------------------------------------------------------------------------------------
-- The policy

local function fractional_percent(p, default)
  -- RuntimeFractionalPercent: the runtime key cannot be read from Lua; default_value decides.
  if p == nil then return default end
  local v = p.default_value or {}
  return { numerator = v.numerator or 0, denominator = DENOMINATORS[v.denominator or "HUNDRED"] or 100 }
end

local function make_matcher(m)
  local ignore_case = m.ignore_case == true
  local function fold(s) return ignore_case and s:lower() or s end
  if m.exact then local want = fold(m.exact); return function(s) return fold(s) == want end end
  if m.prefix then local want = fold(m.prefix); return function(s) return fold(s):sub(1, #want) == want end end
  if m.suffix then local want = fold(m.suffix); return function(s) return #s >= #want and fold(s):sub(-#want) == want end end
  if m.contains then local want = fold(m.contains); return function(s) return fold(s):find(want, 1, true) ~= nil end end
  if m.safe_regex then
    local prog = compile_regex(m.safe_regex.regex)
    return function(s) return regex_full_match(prog, s) end
  end
  error("additional_origins: a matcher needs exact, prefix, suffix, contains or safe_regex", 0)
end

local function load_policy(cfg)
  cfg = cfg or {}
  local policy = {
    enabled = fractional_percent(cfg.filter_enabled, { numerator = 100, denominator = 100 }),
    shadow = fractional_percent(cfg.shadow_enabled, nil),
    origins = {},
  }
  for i, m in ipairs(cfg.additional_origins or {}) do policy.origins[i] = make_matcher(m) end
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
