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

-- BEGIN pw_match: envoyext/sdk/pw_match.lua, copied verbatim (tests/sdk/test_match.py keeps every copy equal)
-- Envoy's StringMatcher and a linear-time regex engine, the Lua twin of envoyext/sdk/pw_match.c
-- (same RE2 subset, same error messages). Envoy's Lua API has no regex and Lua patterns are not
-- regexes; a backtracking matcher would let a hostile header cost exponential time, so this is a
-- Pike VM: every input byte advances each live NFA state once, and no state is held twice, so a
-- match costs at most (input length + 1) x (program size) steps. Envoy runs a Lua filter as one
-- inline script, so each library filter that matches strings carries this block.
--   pw_match.string_matcher(spec, field) -> function(s) -> bool; spec is {exact|prefix|suffix|
--     contains = s, ignore_case = b}, {safe_regex = {regex = s}}, Istio's {regex = s} or a bare
--     string (exact); errors (level 0) name `field`. Regexes match the whole string.
--   pw_match.compile(pattern) -> prog | nil, "<what> at offset <n>";
--   pw_match.full_match(prog, s) -> bool; prog.steps counts the work done so far.
-- Supported: literals, `.`, `[...]` (ranges, `^`), \d \w \s \D \W \S (ASCII; \s is [\t\n\f\r ]),
-- \n \t \r \f \v, escaped punctuation, `( )`, `(?: )`, `|`, `* + ?`, `{n}` `{n,}` `{n,m}` (<= 1000,
-- a lazy `?` accepted), `^`, `$`. Anything else is refused, never read as something else. Bytes are
-- matched, not code points, as Envoy's safe_regex does on header values.
local pw_match = (function()
  local MAX_PATTERN, MAX_PROGRAM, MAX_REPEAT = 1024, 8192, 1000
  local byte, lower = string.byte, string.lower
  local BYTE, SET, SPLIT, JMP, BOL, EOL, MATCH = 1, 2, 3, 4, 5, 6, 7
  local QUANTIFIER = { [42] = true, [43] = true, [63] = true, [123] = true } -- * + ? {
  local NAMED = { n = 10, t = 9, r = 13, f = 12, v = 11 }

  local function set_of(pred)
    local set = {}
    for b = 0, 255 do if pred(b) then set[b] = true end end
    return set
  end
  local function complement(set) return set_of(function(b) return not set[b] end) end
  local function is_digit(b) return b >= 48 and b <= 57 end
  local function is_word(b) return is_digit(b) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122) or b == 95 end
  local CLASSES = { d = set_of(is_digit), w = set_of(is_word),
                    s = set_of(function(b) return b == 32 or b == 9 or b == 10 or b == 12 or b == 13 end) }
  local DOT = set_of(function(b) return b ~= 10 end) -- RE2: any character but newline

  -- The pattern as a tree; errors are "<what> at offset <n>" (0-based, as the C engine's).
  local function parse(re)
    local pos = 1
    local function fail(what, at) error(what .. " at offset " .. ((at or pos) - 1), 0) end
    local function peek(ahead) return byte(re, pos + (ahead or 0)) end

    local function escape() -- after a backslash: a byte, or nil and a set
      local c = peek()
      if not c then fail("trailing backslash", pos - 1) end
      pos = pos + 1
      local ch = string.char(c)
      local class = CLASSES[lower(ch)]
      if class then return nil, ch == lower(ch) and class or complement(class) end
      if NAMED[ch] then return NAMED[ch] end
      if is_word(c) or c >= 128 then fail("unsupported escape \\" .. (c < 128 and ch or "?"), pos - 2) end
      return c
    end

    local function member()
      local c = peek()
      if not c then fail("missing ]") end
      pos = pos + 1
      if c == 92 then return escape() end
      return c
    end

    local function class(open)
      local set, negated = {}, peek() == 94
      if negated then pos = pos + 1 end
      local first = true
      while first or peek() ~= 93 do
        first = false
        local lo, lo_set = member()
        local range = peek() == 45 and peek(1) ~= 93 and peek(1) ~= nil
        if range and lo_set then fail("bad range in class") end
        if lo_set then
          for b in pairs(lo_set) do set[b] = true end
        elseif not range then
          set[lo] = true
        else
          pos = pos + 1
          local hi, hi_set = member()
          if hi_set then fail("bad range in class") end
          if hi < lo then fail("bad range in class", open) end
          for b = lo, hi do set[b] = true end
        end
      end
      pos = pos + 1
      return negated and complement(set) or set
    end

    local alternation
    local function atom(depth)
      local c, at = peek(), pos
      pos = pos + 1
      if c == 40 then -- (
        if peek() == 63 then
          if peek(1) ~= 58 then fail("unsupported group syntax (only ( ) and (?: ))") end
          pos = pos + 2
        end
        local node = alternation(depth + 1)
        if peek() ~= 41 then fail("missing )", at) end
        pos = pos + 1
        return node
      elseif c == 91 then return { t = SET, set = class(at) }
      elseif c == 94 then return { t = BOL }
      elseif c == 36 then return { t = EOL }
      elseif c == 46 then return { t = SET, set = DOT }
      elseif QUANTIFIER[c] then fail("nothing to repeat", at)
      elseif c == 92 then
        local b, set = escape()
        if set then return { t = SET, set = set } end
        c = b
      end
      return { t = BYTE, b = c }
    end

    local function count()
      local digits = re:match("^%d+", pos)
      if not digits then return nil end
      pos = pos + #digits
      local v = tonumber(digits)
      return v <= MAX_REPEAT and v or nil
    end

    -- {n} {n,} {n,m}; hi -1 is unbounded. Any other '{' is refused rather than read as a literal
    -- (RE2 would take it literally, Python reads {,m} as {0,m}).
    local function braces(open)
      local lo = count()
      local hi = lo
      if lo and peek() == 44 then
        pos = pos + 1
        hi = -1
        if peek() ~= 125 then
          hi = count()
          if not hi or hi < lo then lo = nil end
        end
      end
      if not lo or peek() ~= 125 then fail("bad {n,m} repeat (at most 1000; a literal { is written \\{)", open) end
      pos = pos + 1
      return lo, hi
    end

    local function repetition(depth)
      local node, c, at = atom(depth), peek(), pos
      if not QUANTIFIER[c] then return node end
      pos = pos + 1
      local lo, hi
      if c == 42 then lo, hi = 0, -1
      elseif c == 43 then lo, hi = 1, -1
      elseif c == 63 then lo, hi = 0, 1
      else lo, hi = braces(at) end
      if node.t == BOL or node.t == EOL then fail("nothing to repeat") end
      if peek() == 63 then pos = pos + 1 end -- lazy: the same answer for a whole-string match
      if QUANTIFIER[peek()] then fail("bad repetition operator") end -- as RE2: a**
      return { t = "repeat", node = node, lo = lo, hi = hi }
    end

    local function sequence(depth)
      local items = {}
      while peek() and peek() ~= 124 and peek() ~= 41 do items[#items + 1] = repetition(depth) end
      return { t = "cat", items = items }
    end

    alternation = function(depth)
      if depth > 100 then fail("groups nested too deep") end
      local node = sequence(depth)
      while peek() == 124 do
        pos = pos + 1
        node = { t = "alt", a = node, b = sequence(depth) }
      end
      return node
    end

    if #re > MAX_PATTERN then fail("pattern longer than 1024 bytes", MAX_PATTERN + 1) end
    local tree = alternation(0)
    if pos <= #re then fail("unmatched )") end
    return tree
  end

  -- The tree as a Thompson program: op[pc], with x (byte, set or first target) and y (second).
  local function generate(tree)
    local op, x, y, n = {}, {}, {}, 0
    local gen
    local function emit(o)
      if n == MAX_PROGRAM then error("pattern too large once its repeats are expanded at offset 0", 0) end
      n = n + 1
      op[n] = o
      return n
    end
    local function split_then(body) -- split L1 L2; L1: body; the caller sets L2
      local split = emit(SPLIT)
      x[split] = n + 1
      gen(body)
      return split
    end
    gen = function(node)
      local t = node.t
      if t == BYTE then x[emit(BYTE)] = node.b
      elseif t == SET then x[emit(SET)] = node.set
      elseif t == BOL or t == EOL then emit(t)
      elseif t == "cat" then for _, item in ipairs(node.items) do gen(item) end
      elseif t == "alt" then -- split L1 L2; L1: a; jmp L3; L2: b; L3:
        local split = split_then(node.a)
        local jmp = emit(JMP)
        y[split] = n + 1
        gen(node.b)
        x[jmp] = n + 1
      else -- repeat: lo copies, then a loop (unbounded) or hi - lo optional copies
        for _ = 1, node.lo do gen(node.node) end
        if node.hi < 0 then
          local split = split_then(node.node)
          x[emit(JMP)] = split
          y[split] = n + 1
        else
          for _ = node.lo + 1, node.hi do
            local split = split_then(node.node)
            y[split] = n + 1
          end
        end
      end
    end
    gen(tree)
    emit(MATCH)
    return { op = op, x = x, y = y, steps = 0 }
  end

  local function compile(pattern)
    local ok, result = pcall(function() return generate(parse(pattern)) end)
    if ok then return result end
    return nil, result
  end

  local function full_match(prog, s)
    local op, x, y, len, steps = prog.op, prog.x, prog.y, #s, 0
    local mark, stack = {}, {} -- mark[pc] == pos + 1: pc is already in the list for pos
    local function add(list, count, pc0, pos) -- pc0 and all it reaches without input
      if mark[pc0] == pos + 1 then return count end
      mark[pc0] = pos + 1
      local sp = 1
      stack[1] = pc0
      while sp > 0 do
        local pc = stack[sp]
        sp = sp - 1
        steps = steps + 1
        local o, a, b = op[pc], nil, nil
        if o == JMP then a = x[pc]
        elseif o == SPLIT then a, b = x[pc], y[pc]
        elseif o == BOL then if pos == 0 then a = pc + 1 end
        elseif o == EOL then if pos == len then a = pc + 1 end
        else count = count + 1; list[count] = pc end -- consumes a byte, or MATCH
        if a and mark[a] ~= pos + 1 then mark[a] = pos + 1; sp = sp + 1; stack[sp] = a end
        if b and mark[b] ~= pos + 1 then mark[b] = pos + 1; sp = sp + 1; stack[sp] = b end
      end
      return count
    end
    local cur, next_list = {}, {}
    local n_cur = add(cur, 0, 1, 0)
    for pos = 0, len - 1 do
      if n_cur == 0 then break end
      local c, n_next = byte(s, pos + 1), 0
      for i = 1, n_cur do
        local pc = cur[i]
        local o = op[pc]
        steps = steps + 1
        if (o == BYTE and x[pc] == c) or (o == SET and x[pc][c]) then
          n_next = add(next_list, n_next, pc + 1, pos + 1)
        end
      end
      cur, next_list, n_cur = next_list, cur, n_next
    end
    prog.steps = prog.steps + steps
    for i = 1, n_cur do
      if op[cur[i]] == MATCH then return true end
    end
    return false
  end

  local KINDS = { "exact", "prefix", "suffix", "contains", "regex" }

  local function string_matcher(spec, field)
    if type(spec) == "string" then spec = { exact = spec } end
    local kind, key, value
    if type(spec) == "table" then
      for _, k in ipairs(KINDS) do
        if kind == nil and type(spec[k]) == "string" then kind, key, value = k, k, spec[k] end
      end
      if kind == nil and type(spec.safe_regex) == "table" and type(spec.safe_regex.regex) == "string" then
        kind, key, value = "regex", "safe_regex.regex", spec.safe_regex.regex
      end
    end
    if kind == nil then error(field .. ": needs one of exact, prefix, suffix, contains, safe_regex.regex", 0) end
    if kind == "regex" then -- Envoy ignores ignore_case for regexes
      local prog, err = compile(value)
      if not prog then error(("%s.%s: %s (pattern \"%s\")"):format(field, key, err, value), 0) end
      return function(s) return full_match(prog, s) end
    end
    local fold = spec.ignore_case == true and lower or function(s) return s end
    local want = fold(value)
    if kind == "exact" then return function(s) return fold(s) == want end
    elseif kind == "prefix" then return function(s) return fold(s):sub(1, #want) == want end
    elseif kind == "suffix" then return function(s) return #s >= #want and fold(s):sub(#s - #want + 1) == want end
    end
    return function(s) return fold(s):find(want, 1, true) ~= nil end
  end

  return { compile = compile, full_match = full_match, string_matcher = string_matcher }
end)()
-- END pw_match

-- A ListStringMatcher ({patterns: [...]}) as one predicate; nil when the list is absent or empty.
-- Header names are matched by Envoy's StringMatcher (pw_match above); `field` names the list in errors.
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
