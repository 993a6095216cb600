-- pw_match: a Lua library (filter.yaml `lua_libraries: [pw_match]`). This file is a chunk that returns
-- the module table; envoyext.artifact.lua_code appends it to a filter's script as the global `pw_match`.
-- Envoy's StringMatcher and a linear-time regex engine, the Lua twin of envoyext/sdk/pw_match.c
-- (same RE2 subset, same error messages). Envoy's Lua API has no regex and Lua patterns are not
-- regexes; a backtracking matcher would let a hostile header cost exponential time, so this is a
-- Pike VM: every input byte advances each live NFA state once, and no state is held twice, so a
-- match costs at most (input length + 1) x (program size) steps.
--   pw_match.string_matcher(spec, field) -> function(s) -> bool; spec is {exact|prefix|suffix|
--     contains = s, ignore_case = b}, {safe_regex = {regex = s}}, Istio's {regex = s} or a bare
--     string (exact); errors (level 0) name `field`. Regexes match the whole string.
--   pw_match.compile(pattern) -> prog | nil, "<what> at offset <n>";
--   pw_match.full_match(prog, s) -> bool; prog.steps counts the work done so far.
-- Supported: literals, `.`, `[...]` (ranges, `^`), \d \w \s \D \W \S (ASCII; \s is [\t\n\f\r ]),
-- \n \t \r \f \v, escaped punctuation, `( )`, `(?: )`, `|`, `* + ?`, `{n}` `{n,}` `{n,m}` (<= 1000,
-- a lazy `?` accepted), `^`, `$`. Anything else is refused, never read as something else. Bytes are
-- matched, not code points, as Envoy's safe_regex does on header values.
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
