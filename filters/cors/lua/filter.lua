-- cors: Cross-Origin Resource Sharing, as Envoy's envoy.filters.http.cors with one CorsPolicy
-- and Istio's VirtualService corsPolicy. Configuration: ../schema.json (`envoyext_config`).
--
-- A preflight (OPTIONS with Origin and Access-Control-Request-Method) from an allowed origin
-- is answered here with 200; other requests from an allowed origin go upstream and get
-- access-control-allow-origin (the request's origin, echoed), -allow-credentials and
-- -expose-headers on the way back. A request from any other origin gets no CORS headers.

local METADATA_NS = "envoyext.cors" -- carries the allowed origin from request to response

-- ---------------------------------------------------------------------------------------------
-- A small RE2-subset regex, matched against the whole string (Envoy's safe_regex full match):
-- literals, ., [...] classes, \d \w \s (and negations), escapes, ( ), (?: ), |, * + ? {m,n}.
-- Lua patterns are not regexes and Envoy's Lua API has no regex, hence this.

local function class_of(ch)
  if ch == "d" then return "%d" elseif ch == "w" then return "[%w_]" elseif ch == "s" then return "%s"
  elseif ch == "D" then return "%D" elseif ch == "W" then return "[^%w_]" elseif ch == "S" then return "%S" end
end

local function parse_regex(re)
  local pos = 1
  local function peek() return string.sub(re, pos, pos) end
  local function fail(msg) error("regex " .. re .. ": " .. msg .. " at " .. pos, 0) end
  local parse_alt

  -- A one-character test as a function of the byte.
  local function escape_test(ch)
    local cls = class_of(ch)
    if cls then
      return function(c) return string.find(c, "^" .. cls) ~= nil end
    end
    if string.find(ch, "^%w") then fail("unsupported escape \\" .. ch) end
    return function(c) return c == ch end
  end

  local function parse_class()
    local negate = false
    if peek() == "^" then negate = true; pos = pos + 1 end
    local tests, first = {}, true
    while pos <= #re and (first or peek() ~= "]") do
      first = false
      local ch = peek(); pos = pos + 1
      local test
      if ch == "\\" then
        test = escape_test(peek()); pos = pos + 1
      elseif peek() == "-" and string.sub(re, pos + 1, pos + 1) ~= "]" and pos + 1 <= #re then
        local hi = string.sub(re, pos + 1, pos + 1)
        pos = pos + 2
        local lo = ch
        test = function(c) return c >= lo and c <= hi end
      else
        test = function(c) return c == ch end
      end
      tests[#tests + 1] = test
    end
    if peek() ~= "]" then fail("unterminated [") end
    pos = pos + 1
    return { test = function(c)
      for _, t in ipairs(tests) do if t(c) then return not negate end end
      return negate
    end }
  end

  local function parse_atom()
    local ch = peek(); pos = pos + 1
    if ch == "(" then
      if string.sub(re, pos, pos + 1) == "?:" then pos = pos + 2 end
      local node = parse_alt()
      if peek() ~= ")" then fail("missing )") end
      pos = pos + 1
      return node
    elseif ch == "[" then
      return parse_class()
    elseif ch == "." then
      return { test = function(c) return c ~= "\n" end }
    elseif ch == "\\" then
      local e = peek(); pos = pos + 1
      return { test = escape_test(e) }
    elseif ch == "*" or ch == "+" or ch == "?" or ch == "{" then
      fail("nothing to repeat")
    end
    return { test = function(c) return c == ch end }
  end

  local function parse_seq()
    local seq = {}
    while pos <= #re and peek() ~= "|" and peek() ~= ")" do
      if peek() == "^" and pos == 1 then pos = pos + 1
      elseif peek() == "$" and pos == #re then pos = pos + 1
      else
        local item = { node = parse_atom(), min = 1, max = 1 }
        local q = peek()
        if q == "*" then item.min, item.max = 0, math.huge; pos = pos + 1
        elseif q == "+" then item.min, item.max = 1, math.huge; pos = pos + 1
        elseif q == "?" then item.min, item.max = 0, 1; pos = pos + 1
        elseif q == "{" then
          local m, comma, n, rest = string.match(re, "^{(%d+)(,?)(%d*)}()", pos)
          if not m then fail("bad {m,n}") end
          item.min = tonumber(m)
          item.max = comma == "" and item.min or (n == "" and math.huge or tonumber(n))
          pos = rest
        end
        if item.min ~= item.max and peek() == "?" then pos = pos + 1 end -- lazy: same full-match result
        seq[#seq + 1] = item
      end
    end
    return seq
  end

  parse_alt = function()
    local alts = { parse_seq() }
    while peek() == "|" do
      pos = pos + 1
      alts[#alts + 1] = parse_seq()
    end
    return { alts = alts }
  end

  local root = parse_alt()
  if pos <= #re then fail("unexpected " .. peek()) end
  return root
end

local match_node

-- Match seq[i..] at byte p, then continue with k(p). Repetition is greedy with backtracking;
-- an iteration that consumed nothing ends the repetition (so (a*)* terminates).
local function match_seq(seq, i, s, p, k)
  local item = seq[i]
  if item == nil then return k(p) end
  local function rep(count, at)
    if count < item.max then
      local ok = match_node(item.node, s, at, function(np)
        if np == at then
          return count + 1 >= item.min and match_seq(seq, i + 1, s, np, k)
        end
        return rep(count + 1, np)
      end)
      if ok then return true end
    end
    return count >= item.min and match_seq(seq, i + 1, s, at, k)
  end
  return rep(0, p)
end

match_node = function(node, s, p, k)
  if node.alts then
    for _, alt in ipairs(node.alts) do
      if match_seq(alt, 1, s, p, k) then return true end
    end
    return false
  end
  if p <= #s and node.test(string.sub(s, p, p)) then return k(p + 1) end
  return false
end

local function regex_full_match(root, s)
  return match_node(root, s, 1, function(p) return p == #s + 1 end)
end

-- ---------------------------------------------------------------------------------------------
-- Configuration, compiled on first use (envoyext_config is assigned after this chunk runs).

local function joined(v)
  if type(v) == "table" then return table.concat(v, ",") end
  return v or ""
end

local function origin_matcher(spec)
  if type(spec) == "string" then spec = { exact = spec } end
  local fold = spec.ignore_case and string.lower or function(x) return x end
  if spec.exact then
    local want = fold(spec.exact)
    return function(o) return fold(o) == want end
  elseif spec.prefix then
    local want = fold(spec.prefix)
    return function(o) return string.sub(fold(o), 1, #want) == want end
  elseif spec.suffix then
    local want = fold(spec.suffix)
    return function(o) local f = fold(o); return #f >= #want and string.sub(f, -#want) == want end
  elseif spec.contains then
    local want = fold(spec.contains)
    return function(o) return string.find(fold(o), want, 1, true) ~= nil end
  end
  local root = parse_regex(spec.regex) -- errors name the regex; the config is then rejected
  return function(o) return regex_full_match(root, o) end
end

local compiled

local function config(handle)
  if compiled == nil then
    local raw = envoyext_config or {}
    local ok, err = pcall(function()
      local matchers = {}
      for i, spec in ipairs(raw.allow_origins or {}) do matchers[i] = origin_matcher(spec) end
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
