-- The Lua side of the Envoy Lua filter emulator: the stream handle and every object it hands out,
-- written in Lua over plain tables so that a request crosses into Python only for what needs the
-- outside world (callouts, crypto, stream facts). One copy of this file runs in each lua_State,
-- as Envoy keeps one lua_State per script.
--
-- Objects are userdata made with newproxy() so type() and tostring() say "userdata" as in Envoy;
-- their state lives in a weak table keyed by the proxy. Every object belongs to a "scope" that
-- dies when the coroutine yields (Envoy's LuaDeathRef / markDead), after which any method raises
-- "object used outside of proper scope".
--
-- Errors are raised with error(msg, level) so that the position prefix names the user's line, as
-- luaL_error() in Envoy's C++ thunks does (luaL_where(L, 1) is the caller of the C function).
-- Helpers that raise are therefore never tail-called: a tail call would remove the frame that
-- the level counts.

local M = {}

local type, tostring, tonumber, select, error, pairs, ipairs, next = type, tostring, tonumber, select, error, pairs, ipairs, next
local setmetatable, getmetatable, newproxy, rawget = setmetatable, getmetatable, newproxy, rawget
local co_create, co_resume, co_status, co_yield = coroutine.create, coroutine.resume, coroutine.status, coroutine.yield
local concat, floor, huge = table.concat, math.floor, math.huge
local sfind, ssub, slower, sformat = string.find, string.sub, string.lower, string.format

local HOST          -- Python callbacks, set by M.init
-- proxy -> state table. Not weak (inserting into a weak table made it the hottest line): every
-- proxy made during a run is listed in CREATED and dropped when the run ends, after which a
-- proxy kept by the script (in a global, say) has no state and counts as dead, which it is.
local STATE = {}
local CREATED, NCREATED = {}, 0
local LOGS, NLOGS = {}, 0
M.errors, M.executions = 0, 0

---------------------------------------------------------------------------------------------------
-- Lua 5.2 compatibility as Envoy builds LuaJIT (LUAJIT_ENABLE_LUA52COMPAT): pairs/ipairs honour
-- __pairs/__ipairs, table.pack/table.unpack exist. Observed on Envoy 1.40: #t honours __len and
-- table.pack is a builtin; lupa's LuaJIT is built without the flag.

local rawpairs, rawipairs = pairs, ipairs
-- The metamethod `event` is reached by a tail call (the __pairs of this file count on it).
local function honouring(event, raw)
  return function(t)
    local mt = getmetatable(t)
    local f = type(mt) == "table" and rawget(mt, event)
    if f then return f(t) end
    return raw(t)
  end
end
function M.install_compat(G)
  G.pairs = honouring("__pairs", rawpairs)
  G.ipairs = honouring("__ipairs", rawipairs)
  G.table.pack = G.table.pack or function(...) return {n = select("#", ...), ...} end
  G.table.unpack = G.table.unpack or G.unpack
end
pairs = rawpairs

---------------------------------------------------------------------------------------------------
-- Argument checks that produce LuaJIT's / Envoy's argument messages. `i` is the argument number
-- as the user counts it (self excluded), `n` the number of arguments actually passed.

local function typename(n, i, v)
  if i > n then return "no value" end
  return type(v)
end

-- As luaL_argerror words it: the argument counts self unless the call was a method call, and the
-- function is named as its call site names it ('?' for a tail call, observed on 1.40). `level` is
-- the stack level of the API method as seen from here (2: it called argerr itself).
local function badarg(i, fname, expected, got)
  return sformat("bad argument #%d to '%s' (%s expected, got %s)", i, fname, expected, got)
end

local getinfo = debug.getinfo
local function argerr(i, expected, fname, n, v, level)
  local msg_i, name = i, fname
  local ar = getinfo(level or 2, "n")
  if ar and ar.namewhat ~= "method" then
    msg_i, name = i + 1, ar.name or "?"
  end
  return badarg(msg_i, name, expected, typename(n, i, v))
end

-- A wrong receiver, as luaL_checkudata words it: always argument #1, named by the method.
local function receiver_error(fname, expected, self)
  return badarg(1, fname, expected, self == nil and "no value" or type(self))
end

-- lua_isstring: strings and numbers; numbers are converted as lua_tolstring does ("%.14g").
local function tostr(v)
  if type(v) == "number" then return sformat("%.14g", v) end
  return v
end

-- luaL_checkstring / luaL_checkinteger on argument `i` of an API method: the value as a string
-- (lua_tolstring) or as an integer truncated toward zero. Called by the API method itself, never
-- tail-called, so level 3 is the user's line and argerr finds the method at level 3.
local function arg_string(n, i, v, fname)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return sformat("%.14g", v) end
  error(argerr(i, "string", fname, n, v, 3), 3)
end

-- lua_tointeger as Envoy's LuaJIT (x86-64) does it: a C cast of the double to int64, so a NaN, an
-- infinity or anything outside int64 comes out as INT64_MIN (cvttsd2si's "integer indefinite"),
-- which every caller then refuses as negative; never a non-finite value handed on to the host.
local INT64_MIN = -9223372036854775808
local function toint(v)
  v = tonumber(v)
  if v ~= v or v >= -INT64_MIN or v < INT64_MIN then return INT64_MIN end
  return v >= 0 and floor(v) or -floor(-v)
end

local function arg_integer(n, i, v, fname)
  if tonumber(v) == nil then error(argerr(i, "number", fname, n, v, 3), 3) end
  return toint(v)
end

---------------------------------------------------------------------------------------------------
-- Classes

local function class(methods, meta)
  local proto = newproxy(true)
  local mt = getmetatable(proto)
  mt.__index = methods
  for k, v in rawpairs(meta or {}) do mt[k] = v end
  return function(st)
    local p = newproxy(proto)
    STATE[p] = st
    NCREATED = NCREATED + 1
    CREATED[NCREATED] = p
    return p
  end
end

local DEAD = "object used outside of proper scope"

-- Envoy checks a method's receiver with luaL_checkudata under typeid(T).name(): the Itanium-mangled
-- C++ class name is what a wrong receiver's argument error names (observed on 1.40).
local function mangled(ns, class)
  local out = {"N"}
  for part in (ns .. "::" .. class):gmatch("[^:]+") do out[#out + 1] = #part .. part end
  return concat(out) .. "E"
end
local HTTP_NS, COMMON_NS = "Envoy::Extensions::HttpFilters::Lua", "Envoy::Extensions::Filters::Common::Lua"
local KIND = {
  HeaderMap = mangled(HTTP_NS, "HeaderMapWrapper"), StreamInfo = mangled(HTTP_NS, "StreamInfoWrapper"),
  FilterState = mangled(HTTP_NS, "FilterStateWrapper"), DynamicMetadata = mangled(HTTP_NS, "DynamicMetadataMapWrapper"),
  PublicKey = mangled(HTTP_NS, "PublicKeyWrapper"), StreamHandle = mangled(HTTP_NS, "StreamHandleWrapper"),
  Buffer = mangled(COMMON_NS, "BufferWrapper"), Metadata = mangled(COMMON_NS, "MetadataMapWrapper"),
  Connection = mangled(COMMON_NS, "ConnectionWrapper"), SslConnection = mangled(COMMON_NS, "SslConnectionWrapper"),
  ParsedX509Name = mangled(COMMON_NS, "ParsedX509NameWrapper"),
  ConnectionDynamicMetadataMapWrapper = mangled(HTTP_NS, "ConnectionDynamicMetadataMapWrapper"),
}
M.KIND = KIND

-- Envoy's thunk uses luaL_checkudata on the receiver: a wrong receiver (h.headers() instead of
-- h:headers()) is an argument error naming the C++ type. Ours names the Lua-side kind.
local function self_state(self, kind, fname)
  local st = STATE[self]
  if st == nil then
    if type(self) == "userdata" then error(DEAD, 3) end
    error(receiver_error(fname, KIND[kind] or kind, self), 3)
  end
  if not st.scope.live then error(DEAD, 3) end
  return st
end

---------------------------------------------------------------------------------------------------
-- Header maps: an ordered list of entries. Envoy keeps pseudo-headers first, and for its "inline"
-- (O(1)) headers a second add() appends to the existing value with "," rather than adding an entry
-- (observed: content-type "a" + add "b" -> one entry "a,b"). The inline sets are Envoy 1.40's,
-- handed in by M.init from envoyext.envoy.facts, the one table the Wasm emulator reads too.

local INLINE_REQUEST, INLINE_RESPONSE, INLINE_REQUEST_TRAILERS, INLINE_RESPONSE_TRAILERS
local INLINE_NONE = {}

-- store: {k = {...}, v = {...}, n = count, inline = set, dirty = bool, base = entries it came with,
-- pure = nothing but appends since}. A pure store goes back as its new entries only (most scripts
-- only add headers), which the host appends to the list it sent.
local function store_new(inline)
  return {k = {}, v = {}, n = 0, inline = inline, dirty = false, base = 0, pure = true}
end

local function store_add(s, key, value)
  local k, v, n = s.k, s.v, s.n
  if s.inline[key] then
    for i = 1, n do
      if k[i] == key then v[i] = v[i] .. "," .. value; s.pure = false; return end
    end
  end
  if ssub(key, 1, 1) == ":" then
    s.pure = false
    -- Pseudo-headers stay in front of regular ones.
    local pos = 1
    while pos <= n and ssub(k[pos], 1, 1) == ":" do pos = pos + 1 end
    for i = n, pos, -1 do k[i + 1] = k[i]; v[i + 1] = v[i] end
    k[pos], v[pos] = key, value
  else
    k[n + 1], v[n + 1] = key, value
  end
  s.n = n + 1
end

local function store_remove(s, key)
  local k, v, n = s.k, s.v, s.n
  s.pure = false
  local j = 0
  for i = 1, n do
    if k[i] ~= key then
      j = j + 1
      k[j], v[j] = k[i], v[i]
    end
  end
  for i = j + 1, n do k[i], v[i] = nil, nil end
  s.n = j
end

-- setCopy / setContentLength: in place when present (first entry), else appended.
local function store_set(s, key, value)
  local k = s.k
  for i = 1, s.n do
    if k[i] == key then s.v[i] = value; s.pure = false; return end
  end
  store_add(s, key, value)
end

local function store_from_blob(blob, inline)
  local s = store_new(inline)
  if blob == nil or blob == "" then return s end
  local k, v, n, pos = s.k, s.v, 0, 1
  while true do
    local a = sfind(blob, "\0", pos, true)
    local b = sfind(blob, "\0", a + 1, true)
    local key = ssub(blob, pos, a - 1)
    local value = ssub(blob, a + 1, (b or 0) - 1)
    n = n + 1
    k[n], v[n] = key, value
    if not b then break end
    pos = b + 1
  end
  s.n, s.base = n, n
  return s
end

local function store_blob(s)
  local parts, k, v = {}, s.k, s.v
  for i = 1, s.n do
    parts[2 * i - 1] = k[i]
    parts[2 * i] = v[i]
  end
  return concat(parts, "\0")
end

-- What goes back to the host for a changed store: "\1" .. the appended entries, or everything.
local function store_out(s)
  if not s.pure then return store_blob(s) end
  local parts, k, v, j = {}, s.k, s.v, 0
  for i = s.base + 1, s.n do
    parts[j + 1], parts[j + 2], j = k[i], v[i], j + 2
  end
  return "\1" .. concat(parts, "\0")
end

local function store_first(s, key)
  local k = s.k
  for i = 1, s.n do
    if k[i] == key then return s.v[i] end
  end
  return nil
end

---------------------------------------------------------------------------------------------------
-- HeaderMap object. st = {store, scope, modifiable = function() -> bool, iterating}

local HeaderMap = {}

local function header_modifiable(st)
  if st.iterating then error("header map cannot be modified while iterating", 3) end
  if not st.modifiable() then error("header map can no longer be modified", 3) end
end

function HeaderMap.add(self, ...)
  local st = self_state(self, "HeaderMap", "add")
  local n, key, value = select("#", ...), ...
  key = arg_string(n, 1, key, "add")
  value = arg_string(n, 2, value, "add")
  header_modifiable(st)
  local s = st.store
  store_add(s, slower(key), value)
  s.dirty = true
end

function HeaderMap.get(self, ...)
  local st = self_state(self, "HeaderMap", "get")
  local n, key = select("#", ...), ...
  key = slower(arg_string(n, 1, key, "get"))
  local s = st.store
  local k, v, found, parts = s.k, s.v, nil, nil
  for i = 1, s.n do
    if k[i] == key then
      if found == nil then found = v[i]
      else
        parts = parts or {found}
        parts[#parts + 1] = v[i]
      end
    end
  end
  if found == nil then return end
  if parts then return concat(parts, ",") end
  return found
end

function HeaderMap.getAtIndex(self, ...)
  local st = self_state(self, "HeaderMap", "getAtIndex")
  local n, key, index = select("#", ...), ...
  key = slower(arg_string(n, 1, key, "getAtIndex"))
  index = arg_integer(n, 2, index, "getAtIndex")
  if index < 0 then return end
  local s = st.store
  local k, seen = s.k, 0
  for i = 1, s.n do
    if k[i] == key then
      if seen == index then return s.v[i] end
      seen = seen + 1
    end
  end
end

function HeaderMap.getNumValues(self, ...)
  local st = self_state(self, "HeaderMap", "getNumValues")
  local n, key = select("#", ...), ...
  key = slower(arg_string(n, 1, key, "getNumValues"))
  local s, count = st.store, 0
  local k = s.k
  for i = 1, s.n do
    if k[i] == key then count = count + 1 end
  end
  return count
end

function HeaderMap.remove(self, ...)
  local st = self_state(self, "HeaderMap", "remove")
  local n, key = select("#", ...), ...
  key = slower(arg_string(n, 1, key, "remove"))
  header_modifiable(st)
  store_remove(st.store, key)
  st.store.dirty = true
end

-- Envoy's setCopy() is remove() then addCopy(): the header moves to the end (observed).
function HeaderMap.replace(self, ...)
  local st = self_state(self, "HeaderMap", "replace")
  local n, key, value = select("#", ...), ...
  key = slower(arg_string(n, 1, key, "replace"))
  value = arg_string(n, 2, value, "replace")
  header_modifiable(st)
  store_remove(st.store, key)
  store_add(st.store, key, value)
  st.store.dirty = true
end

function HeaderMap.setHttp1ReasonPhrase(self, ...)
  local st = self_state(self, "HeaderMap", "setHttp1ReasonPhrase")
  st.store.reason = arg_string(select("#", ...), 1, ..., "setHttp1ReasonPhrase")
end

local function header_pairs(self)
  local st = STATE[self]
  if st == nil and type(self) == "userdata" then error(DEAD, 2) end
  -- Reached through pairs() by a tail call, so level 2 is the user's line.
  if st == nil then error(badarg(1, "__pairs", KIND.HeaderMap, type(self)), 2) end
  if not st.scope.live then error(DEAD, 2) end
  if st.iterating then error("cannot create a second iterator before completing the first", 2) end
  -- Envoy snapshots the entries when the iterator is created.
  local s = st.store
  local keys, vals, total = {}, {}, s.n
  for i = 1, total do keys[i], vals[i] = s.k[i], s.v[i] end
  st.iterating = true
  local scope, i = st.scope, 0
  return function()
    if not scope.live then error(DEAD, 2) end
    i = i + 1
    if i > total then
      st.iterating = false
      return nil
    end
    return keys[i], vals[i]
  end
end

local new_headermap = class(HeaderMap, {__pairs = header_pairs})

---------------------------------------------------------------------------------------------------
-- Buffer object. st = {scope, get = fn() -> string, set = fn(string), headers = store}

local Buffer = {}

function Buffer.length(self)
  local st = self_state(self, "Buffer", "length")
  return #st.get()
end

function Buffer.getBytes(self, ...)
  local st = self_state(self, "Buffer", "getBytes")
  local n, index, len = select("#", ...), ...
  index = arg_integer(n, 1, index, "getBytes")
  len = arg_integer(n, 2, len, "getBytes")
  local data = st.get()
  if index < 0 or len < 0 or index + len > #data then
    error("index/length must be >= 0 and (index + length) must be <= buffer size", 2)
  end
  return ssub(data, index + 1, index + len)
end

-- Replaces the content and sets the stream's content-length, as BufferWrapper::luaSetBytes does
-- (on the header map directly, past the "no longer modifiable" check).
function Buffer.setBytes(self, ...)
  local st = self_state(self, "Buffer", "setBytes")
  local data = arg_string(select("#", ...), 1, ..., "setBytes")
  st.set(data)
  store_set(st.headers, "content-length", tostring(#data))
  st.headers.dirty = true
  return #data
end

local new_buffer = class(Buffer)

---------------------------------------------------------------------------------------------------
-- Metadata values (google.protobuf.Value <-> Lua), as MetadataMapHelper does it.

-- Values from the host arrive as Lua tables already converted; each read hands out a fresh copy
-- (Envoy builds new tables on every get()).
local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in rawpairs(v) do out[k] = deep_copy(x) end
  return out
end

-- MetadataMapHelper::tableLength: a table is a list when every key is a positive integer.
local function table_length(t)
  local max = 0
  for k in rawpairs(t) do
    if type(k) ~= "number" or k < 1 or k ~= floor(k) then return -1 end
    if k > max then max = k end
  end
  return max
end

local NULL = setmetatable({}, {__tostring = function() return "null" end})
M.NULL = NULL

-- loadValue: Lua -> stored value (nil becomes NULL, read back as nil).
local function load_value(v)
  local t = type(v)
  if t == "nil" then return NULL
  elseif t == "number" or t == "boolean" or t == "string" then return v
  elseif t == "table" then
    local len = table_length(v)
    local out = {}
    if len > 0 then
      out.__list = len
      for i = 1, len do out[i] = load_value(v[i]) end
    else
      for k, x in rawpairs(v) do
        if type(k) ~= "string" then
          error(sformat("unexpected type %s in table key (only string keys are supported)", type(k)), 0)
        end
        out[k] = load_value(x)
      end
    end
    return out
  end
  error(sformat("unexpected type '%s' in dynamicMetadata", t), 0)
end

-- setValue: stored value -> fresh Lua value.
local function set_value(v)
  if v == NULL then return nil end
  if type(v) ~= "table" then return v end
  local out = {}
  if v.__list then
    for i = 1, v.__list do out[i] = set_value(v[i]) end
  else
    for k, x in rawpairs(v) do out[k] = set_value(x) end
  end
  return out
end

-- get() and __pairs of the metadata objects, over the table st[field] of stored values.
local function values_get(kind, field)
  return function(self, ...)
    local st = self_state(self, kind, "get")
    local v = st[field][arg_string(select("#", ...), 1, ..., "get")]
    if v == nil then return end
    return set_value(v)
  end
end

-- __pairs over the table st[field], one stored value at a time. Reached through pairs() by a
-- tail call, so level 2 is the user's line.
local function values_pairs(field)
  return function(self)
    local st = STATE[self]
    if st == nil or not st.scope.live then error(DEAD, 2) end
    if st.iterating then error("cannot create a second iterator before completing the first", 2) end
    st.iterating = true
    local scope, t, key = st.scope, st[field], nil
    return function()
      if not scope.live then error(DEAD, 2) end
      local v
      key, v = next(t, key)
      if key == nil then st.iterating = false; return nil end
      return key, set_value(v)
    end
  end
end

-- Metadata object (route metadata, filterContext). st = {scope, fields = table, iterating}
local Metadata = {get = values_get("Metadata", "fields")}
local new_metadata = class(Metadata, {__pairs = values_pairs("fields")})

-- DynamicMetadata object. st = {scope, dyn = {namespace -> fields}, iterating}
local DynamicMetadata = {get = values_get("DynamicMetadata", "dyn")}

function DynamicMetadata.set(self, ...)
  local st = self_state(self, "DynamicMetadata", "set")
  if st.iterating then error("dynamic metadata map cannot be modified while iterating", 2) end
  local n, ns, key, value = select("#", ...), ...
  ns = arg_string(n, 1, ns, "set")
  key = arg_string(n, 2, key, "set")
  local ok, stored = pcall(load_value, value)
  if not ok then error(stored, 2) end
  local fields = st.dyn[ns]
  if fields == nil then fields = {}; st.dyn[ns] = fields end
  fields[key] = stored
end

local new_dynamic_metadata = class(DynamicMetadata, {__pairs = values_pairs("dyn")})

---------------------------------------------------------------------------------------------------
-- SSL connection object. st = {scope, info = table from the host}

local Ssl = {}
local SSL_STRINGS = {"sha256PeerCertificateDigest", "serialNumberPeerCertificate", "issuerPeerCertificate",
  "subjectPeerCertificate", "subjectLocalCertificate", "urlEncodedPemEncodedPeerCertificate",
  "urlEncodedPemEncodedPeerCertificateChain", "sessionId", "ciphersuiteId", "ciphersuiteString", "tlsVersion"}
local SSL_LISTS = {"uriSanPeerCertificate", "uriSanLocalCertificate", "dnsSansPeerCertificate",
  "dnsSansLocalCertificate", "oidsPeerCertificate", "oidsLocalCertificate"}
-- Methods named after the fields of st.info they read, each value passed through `read`.
local function info_getters(methods, kind, names, read)
  for _, name in ipairs(names) do
    methods[name] = function(self)
      local st = self_state(self, kind, name)
      return read(st.info[name])
    end
  end
end
local function or_empty_string(v) return v or "" end
local function list_copy(v) return deep_copy(v or {}) end
info_getters(Ssl, "SslConnection", SSL_STRINGS, or_empty_string)
info_getters(Ssl, "SslConnection", SSL_LISTS, list_copy)
info_getters(Ssl, "SslConnection", {"peerCertificatePresented", "peerCertificateValidated"},
             function(v) return v == true end)
info_getters(Ssl, "SslConnection", {"validFromPeerCertificate", "expirationPeerCertificate"},
             function(v) return v or 0 end)

local ParsedName = {}
info_getters(ParsedName, "ParsedX509Name", {"commonName"}, or_empty_string)
info_getters(ParsedName, "ParsedX509Name", {"organizationName"}, list_copy)
local new_parsed_name = class(ParsedName)

function Ssl.parsedSubjectPeerCertificate(self)
  local st = self_state(self, "SslConnection", "parsedSubjectPeerCertificate")
  local parsed = st.info.parsedSubjectPeerCertificate
  if parsed == nil then return nil end
  return new_parsed_name({scope = st.scope, info = parsed})
end

local new_ssl = class(Ssl)

-- What the stream is (addresses, route, TLS) comes from the host once, when a script first asks.
local function facts(stream)
  if not stream.facts then
    stream.protocol, stream.local_address, stream.remote_address, stream.sni, stream.route_name,
      stream.route_metadata, stream.filter_context, stream.ssl = HOST.stream_facts(stream.ctx)
    stream.route_metadata = stream.route_metadata or {}
    stream.filter_context = stream.filter_context or {}
    stream.virtual_cluster = ""
    stream.facts = true
  end
  return stream
end

-- connection():ssl() and streamInfo():downstreamSslConnection(): nil without TLS.
local function ssl_object(st)
  local info = facts(st.handle.stream).ssl
  if info == nil then return nil end
  st.ssl = st.ssl or new_ssl({scope = st.scope, info = info})
  return st.ssl
end

local Connection = {}
function Connection.ssl(self)
  local st = self_state(self, "Connection", "ssl")
  return ssl_object(st)
end
local new_connection = class(Connection)

---------------------------------------------------------------------------------------------------
-- StreamInfo object. st = {scope, handle}

local StreamInfo = {}
local function info_field(name, field)
  StreamInfo[name] = function(self)
    local st = self_state(self, "StreamInfo", name)
    return facts(st.handle.stream)[field]
  end
end
info_field("protocol", "protocol")
info_field("downstreamLocalAddress", "local_address")
info_field("downstreamDirectLocalAddress", "local_address")
info_field("downstreamRemoteAddress", "remote_address")
info_field("downstreamDirectRemoteAddress", "remote_address")
info_field("requestedServerName", "sni")
info_field("routeName", "route_name")
info_field("virtualClusterName", "virtual_cluster")

function StreamInfo.dynamicMetadata(self)
  local st = self_state(self, "StreamInfo", "dynamicMetadata")
  st.dm = st.dm or new_dynamic_metadata({scope = st.scope, dyn = st.handle.stream.dyn})
  return st.dm
end

function StreamInfo.dynamicTypedMetadata(self, ...)
  local st = self_state(self, "StreamInfo", "dynamicTypedMetadata")
  arg_string(select("#", ...), 1, ..., "dynamicTypedMetadata")
  return nil
end

function StreamInfo.downstreamSslConnection(self)
  local st = self_state(self, "StreamInfo", "downstreamSslConnection")
  return ssl_object(st)
end

-- Filter state: per stream, shared by both directions. set() builds the object through the
-- named ObjectFactory; the factories the emulator knows keep the bytes and serialize them back
-- unchanged (observed on 1.40 for both). get(name, field): no value for these (no fields).
local FILTER_STATE_FACTORIES = {["envoy.string"] = true, ["envoy.network.upstream_server_name"] = true}
local FilterState = {}
function FilterState.get(self, ...)
  local st = self_state(self, "FilterState", "get")
  local v = st.handle.stream.fs[arg_string(select("#", ...), 1, ..., "get")]
  if v == nil or select("#", ...) >= 2 then return end
  return v
end
function FilterState.set(self, ...)
  local st = self_state(self, "FilterState", "set")
  local n, key, factory, value = select("#", ...), ...
  key = arg_string(n, 1, key, "set")
  factory = arg_string(n, 2, factory, "set")
  value = arg_string(n, 3, value, "set")
  if not FILTER_STATE_FACTORIES[factory] then error("'" .. factory .. "' does not have an object factory", 2) end
  st.handle.stream.fs[key] = value
end
local new_filter_state = class(FilterState)

function StreamInfo.filterState(self)
  local st = self_state(self, "StreamInfo", "filterState")
  st.fs = st.fs or new_filter_state({scope = st.scope, handle = st.handle})
  return st.fs
end

-- The connection manager closes the connection after this stream and says so with
-- `connection: close`, from either direction (observed on 1.40).
function StreamInfo.drainConnectionUponCompletion(self)
  local st = self_state(self, "StreamInfo", "drainConnectionUponCompletion")
  st.handle.stream.drain = true
end

local new_stream_info = class(StreamInfo)

-- The connection's stream info (handle:connectionStreamInfo()): dynamic metadata to read (get and
-- pairs; no set) and typed metadata. Nothing in this bootstrap writes either: always empty.
local EMPTY = {}
local ConnectionDynamicMetadata = {}
function ConnectionDynamicMetadata.get(self, ...)
  self_state(self, "ConnectionDynamicMetadataMapWrapper", "get")
  arg_string(select("#", ...), 1, ..., "get")
end
local function empty_pairs(self)
  local st = STATE[self]
  if st == nil or not st.scope.live then error(DEAD, 2) end
  return function() return nil end
end
local new_connection_dynamic_metadata = class(ConnectionDynamicMetadata, {__pairs = empty_pairs})

local ConnectionStreamInfo = {}
function ConnectionStreamInfo.dynamicMetadata(self)
  local st = self_state(self, "N5Envoy10Extensions11HttpFilters3Lua27ConnectionStreamInfoWrapperE", "dynamicMetadata")
  st.dm = st.dm or new_connection_dynamic_metadata({scope = st.scope})
  return st.dm
end
function ConnectionStreamInfo.dynamicTypedMetadata(self, ...)
  self_state(self, "N5Envoy10Extensions11HttpFilters3Lua27ConnectionStreamInfoWrapperE", "dynamicTypedMetadata")
  arg_string(select("#", ...), 1, ..., "dynamicTypedMetadata")
  return nil
end
local new_connection_stream_info = class(ConnectionStreamInfo)

-- handle:virtualHost() / handle:route(): objects whose metadata() reads filter_metadata under the
-- filter's name. The bootstrap gives the virtual host none; the route's is the scenario's.
local VirtualHost = {}
function VirtualHost.metadata(self)
  local st = self_state(self, "N5Envoy10Extensions11HttpFilters3Lua18VirtualHostWrapperE", "metadata")
  st.md = st.md or new_metadata({scope = st.scope, fields = EMPTY})
  return st.md
end
local new_virtual_host = class(VirtualHost)

local Route = {}
function Route.metadata(self)
  local st = self_state(self, "N5Envoy10Extensions11HttpFilters3Lua12RouteWrapperE", "metadata")
  st.md = st.md or new_metadata({scope = st.scope, fields = facts(st.handle.stream).route_metadata})
  return st.md
end
local new_route = class(Route)

---------------------------------------------------------------------------------------------------
-- PublicKey object

local PublicKey = {}
function PublicKey.get(self)
  local st = self_state(self, "PublicKey", "get")
  if st.key == "" then return nil end
  return st.key
end
local new_public_key = class(PublicKey)

---------------------------------------------------------------------------------------------------
-- Stream handle. h = handle state:
--   which ("request"|"response"), hs (header store), body (string|nil), chunk, trailers (store|nil),
--   end_stream, saw_body, buffered_body, headers_continued, state, live, scope, cache, ctx,
--   stream (per-stream shared table), keys (imported public keys), reply (respond() result)

local RUNNING, WAIT_BODY, WAIT_CHUNK, WAIT_TRAILERS, HTTP_CALL, RESPONDED =
  "Running", "WaitForBody", "WaitForBodyChunk", "WaitForTrailers", "HttpCall", "Responded"

local Handle = {}

local function handle_state(self, fname)
  local h = STATE[self]
  if h == nil then
    if type(self) == "userdata" then error(DEAD, 3) end
    error(receiver_error(fname, KIND.StreamHandle, self), 3)
  end
  if not h.live then error(DEAD, 3) end
  return h
end

-- Envoy kills every object handed out when the coroutine yields (StreamHandleWrapper::onMarkDead).
local function kill_scope(h)
  h.scope.live = false
  h.scope = {live = true}
  h.cache = {}
end

local function headers_object(h)
  local c = h.cache.headers
  if c then return c end
  c = new_headermap({store = h.hs, scope = h.scope, modifiable = h.modifiable})
  h.cache.headers = c
  return c
end

-- Methods that hand out one object per resume: Envoy keeps the wrapper until the coroutine
-- yields (kill_scope empties the cache).
local function handle_object(fname, make)
  Handle[fname] = function(self)
    local h = handle_state(self, fname)
    local c = h.cache[fname]
    if c == nil then
      c = make(h)
      h.cache[fname] = c
    end
    return c
  end
end

function Handle.headers(self)
  local h = handle_state(self, "headers")
  return headers_object(h)
end

local function body_object(h)
  local c = h.cache.body
  if c then return c end
  c = new_buffer({scope = h.scope, headers = h.hs,
                  get = function() return h.body end,
                  set = function(data) h.body = data; h.body_dirty = true end})
  h.cache.body = c
  return c
end

-- luaBody after end of stream (also what the body() yield resumes with).
local function body_result(h, always_wrap)
  if not h.buffered_body and h.saw_body then
    return false, "cannot call body() after body has been streamed"
  end
  if h.cache.body then return true, h.cache.body end
  if h.body == nil then
    if not always_wrap then return true end
    h.body = ""
  end
  return true, body_object(h)
end

function Handle.body(self, ...)
  local h = handle_state(self, "body")
  local n, always = select("#", ...), ...
  if n >= 1 and type(always) ~= "boolean" then error(argerr(1, "boolean", "body", n, always), 2) end
  if h.end_stream then
    local ok, res = body_result(h, always)
    if not ok then error(res, 2) end
    if res == nil then return end  -- luaBody returns zero values, not nil
    return res
  elseif h.saw_body then
    error("cannot call body() after body streaming has started", 2)
  end
  h.state = WAIT_BODY
  h.buffered_body = true
  h.wrap_body = always
  return co_yield()
end

function Handle.bodyChunks(self)
  local h = handle_state(self, "bodyChunks")
  if h.saw_body then error("cannot call bodyChunks after body processing has begun", 2) end
  return function()
    if not h.live then error(DEAD, 2) end
    if h.end_stream then return end
    h.state = WAIT_CHUNK
    return co_yield()
  end
end

local function trailers_object(h)
  local c = h.cache.trailers
  if c then return c end
  c = new_headermap({store = h.trailers, scope = h.scope, modifiable = function() return true end})
  h.cache.trailers = c
  return c
end

function Handle.trailers(self)
  local h = handle_state(self, "trailers")
  if h.end_stream and h.trailers == nil then return end
  if h.trailers ~= nil then return trailers_object(h) end
  h.state = WAIT_TRAILERS
  return co_yield()
end

handle_object("metadata", function(h)
  return new_metadata({scope = h.scope, fields = facts(h.stream).route_metadata})
end)
handle_object("filterContext", function(h)
  return new_metadata({scope = h.scope, fields = facts(h.stream).filter_context})
end)
handle_object("streamInfo", function(h) return new_stream_info({scope = h.scope, handle = h}) end)
handle_object("connection", function(h) return new_connection({scope = h.scope, handle = h}) end)
-- Logging: luaL_checkstring; the whole string is logged, NUL bytes included (observed on 1.40:
-- an httpCall body "resp\0nse" is logged with its NUL and the rest).
local function script_log(level, msg)
  LOGS[NLOGS + 1] = level
  LOGS[NLOGS + 2] = msg
  NLOGS = NLOGS + 2
end

local function logger(level, fname)
  return function(self, ...)
    handle_state(self, fname)
    script_log(level, arg_string(select("#", ...), 1, ..., fname))
  end
end
Handle.logTrace = logger("trace", "logTrace")
Handle.logDebug = logger("debug", "logDebug")
Handle.logInfo = logger("info", "logInfo")
Handle.logWarn = logger("warn", "logWarn")
Handle.logErr = logger("error", "logErr")
Handle.logCritical = logger("critical", "logCritical")

-- buildHeadersFromTable as Envoy 1.40 has it: luaL_checkstring on the key and value slots of a
-- lua_next() walk. A number key is converted in place, which breaks lua_next: "invalid key to
-- 'next'", raised with no position (observed). Other wrong types are argument errors numbered by
-- absolute stack slot: the call's arguments, one slot more, then key and value (observed: #5 for
-- a respond() header value, #6 for an httpCall() header key). Called from the API method, so
-- level 3 is the user's line.
local function headers_from_table(t, inline, nargs, fname)
  local s = store_new(inline)
  for key, value in rawpairs(t) do
    if type(key) == "number" then error("invalid key to 'next'", 0) end
    if type(key) ~= "string" then
      error(badarg(nargs + 1, fname, "string", type(key)), 3)
    end
    local lkey = slower(key)
    -- A table value is a list of values, checked one slot further down the stack.
    local items, slot = value, nargs + 4
    if type(value) ~= "table" then items, slot = {value}, nargs + 2 end
    for _, item in rawpairs(items) do
      if type(item) ~= "string" and type(item) ~= "number" then
        error(badarg(slot, fname, "string", type(item)), 3)
      end
      store_add(s, lkey, tostr(item))
    end
  end
  return s
end

function Handle.respond(self, ...)
  local h = handle_state(self, "respond")
  if h.which == "response" then
    -- Envoy 1.40's EncoderCallbacks::respond.
    error("respond not currently supported in the response path", 2)
  end
  if h.headers_continued then error("respond() cannot be called if headers have been continued", 2) end
  local n, headers, body = select("#", ...), ...
  if type(headers) ~= "table" then error(argerr(1, "table", "respond", n, headers), 2) end
  if body ~= nil then body = arg_string(n, 2, body, "respond") end
  local s = headers_from_table(headers, INLINE_RESPONSE, n + 1, "respond")
  local status = tonumber(store_first(s, ":status") or "")
  if status == nil or status ~= floor(status) or status < 200 or status >= 600
     or not sfind(store_first(s, ":status"), "^%d+$") then
    error(":status must be between 200-599", 2)
  end
  if body ~= nil then store_set(s, "content-length", tostring(#body)) end
  h.reply = {status = status, headers = s, body = body}
  h.state = RESPONDED
  return co_yield()
end

local OPTION_KEYS = {asynchronous = true, timeout_ms = true, trace_sampled = true,
                     return_duplicate_headers = true, send_xff = true}

function Handle.httpCall(self, ...)
  local h = handle_state(self, "httpCall")
  local n, cluster, headers, body, timeout, async = select("#", ...), ...
  local opts = {async = false, timeout = 0, send_xff = true, dup = false}
  if type(timeout) == "table" then
    for key, value in rawpairs(timeout) do
      if type(key) ~= "string" then error("httpCall() options key must be a string, got " .. type(key), 2) end
      if not OPTION_KEYS[key] then error('"' .. key .. '" is not valid key for httpCall() options', 2) end
      if key == "timeout_ms" then
        if tonumber(value) == nil then error("'timeout_ms' option must be a number, got " .. type(value), 2) end
        opts.timeout = toint(value)
        if opts.timeout < 0 then error("http call timeout must be >= 0", 2) end
      elseif key == "asynchronous" then opts.async = value ~= nil and value ~= false
      elseif key == "send_xff" then opts.send_xff = value ~= nil and value ~= false
      elseif key == "return_duplicate_headers" then opts.dup = value ~= nil and value ~= false
      end
    end
  else
    if n >= 5 and type(async) ~= "boolean" then
      error("http call asynchronous flag must be 'true', 'false', or empty", 2)
    end
    opts.timeout = arg_integer(n, 4, timeout, "httpCall")
    if opts.timeout < 0 then error("http call timeout must be >= 0", 2) end
    opts.async = async == true
  end
  cluster = arg_string(n, 1, cluster, "httpCall")
  if type(headers) ~= "table" then error(argerr(2, "table", "httpCall", n, headers), 2) end
  if body ~= nil then body = arg_string(n, 3, body, "httpCall") end
  if not HOST.has_cluster(cluster) then error("http call cluster invalid. Must be configured", 2) end
  local s = headers_from_table(headers, INLINE_REQUEST, n + 1, "httpCall")
  if store_first(s, ":path") == nil or store_first(s, ":method") == nil or store_first(s, ":authority") == nil then
    error("http call headers must include ':path', ':method', and ':authority'", 2)
  end
  if body ~= nil then store_set(s, "content-length", tostring(#body)) end
  -- What Envoy's async client adds on the way out (observed on the wire).
  store_set(s, "x-envoy-internal", "true")
  if opts.send_xff then
    local xff = store_first(s, "x-forwarded-for")
    store_set(s, "x-forwarded-for", xff and (xff .. "," .. HOST.local_address) or HOST.local_address)
  end
  if opts.timeout > 0 then store_set(s, "x-envoy-expected-rq-timeout-ms", tostring(opts.timeout)) end
  local status, rblob, rbody = HOST.http_call(h.ctx, cluster, store_blob(s), body, opts.timeout, opts.async)
  if opts.async then return end
  -- Build the result table as onSuccess does: a repeated header keeps its last value unless
  -- return_duplicate_headers asks for arrays.
  local rs = store_from_blob(rblob, INLINE_NONE)
  local out = {}
  for i = 1, rs.n do
    local k, v = rs.k[i], rs.v[i]
    if opts.dup and out[k] ~= nil then
      if type(out[k]) == "table" then out[k][#out[k] + 1] = v else out[k] = {out[k], v} end
    else
      out[k] = v
    end
  end
  if rbody == "" then rbody = nil end
  h.call_result = {out, rbody}
  h.state = HTTP_CALL
  return co_yield()
end

function Handle.base64Escape(self, ...)
  handle_state(self, "base64Escape")
  return HOST.b64encode(arg_string(select("#", ...), 1, ..., "base64Escape"))
end

function Handle.base64Decode(self, ...)
  handle_state(self, "base64Decode")
  return HOST.b64decode(arg_string(select("#", ...), 1, ..., "base64Decode"))
end

-- The optional EnvoyTimestampResolution argument: 0 when absent or empty, -1 when not a number.
-- Called from the API method, so level 3 is the user's line (not arg_string: one level deeper).
local function resolution(n, unit, fname)
  if unit ~= nil and type(unit) ~= "string" and type(unit) ~= "number" then
    error(argerr(1, "string", fname, n, unit, 3), 3)
  end
  unit = unit == nil and "" or tostr(unit)
  if unit == "" then return 0 end
  if sfind(unit, "^%d+$") then return tonumber(unit) end
  return -1
end

function Handle.timestamp(self, ...)
  handle_state(self, "timestamp")
  local r = resolution(select("#", ...), ..., "timestamp")
  if r ~= 0 then error("timestamp format must be MILLISECOND.", 2) end
  return floor(HOST.now_us() / 1000)
end

function Handle.timestampString(self, ...)
  handle_state(self, "timestampString")
  local r = resolution(select("#", ...), ..., "timestampString")
  if r == 0 then return sformat("%.0f", floor(HOST.now_us() / 1000)) end
  if r == 1 then return sformat("%.0f", HOST.now_us()) end
  error("timestamp format must be MILLISECOND or MICROSECOND.", 2)
end

function Handle.importPublicKey(self, ...)
  local h = handle_state(self, "importPublicKey")
  local n, keyder, len = select("#", ...), ...
  keyder = arg_string(n, 1, keyder, "importPublicKey")
  len = arg_integer(n, 2, len, "importPublicKey")
  -- Envoy caches the wrapper for the rest of the resume, whatever key is asked for next.
  local c = h.cache.public_key
  if c then return c end
  local der = ssub(keyder, 1, len)
  local id = HOST.import_public_key(der)
  if id == nil then
    c = new_public_key({scope = h.scope, key = ""})
  else
    -- Envoy stores the key under the first `len` bytes but hands back the whole string.
    h.keys[der] = id
    c = new_public_key({scope = h.scope, key = keyder})
  end
  h.cache.public_key = c
  return c
end

function Handle.verifySignature(self, ...)
  local h = handle_state(self, "verifySignature")
  local n, hash, key, sig, siglen, text, textlen = select("#", ...), ...
  hash = arg_string(n, 1, hash, "verifySignature")
  local id = h.keys[arg_string(n, 2, key, "verifySignature")]
  if id == nil then error("invalid public key", 2) end
  sig = arg_string(n, 3, sig, "verifySignature")
  siglen = arg_integer(n, 4, siglen, "verifySignature")
  text = arg_string(n, 5, text, "verifySignature")
  textlen = arg_integer(n, 6, textlen, "verifySignature")
  local ok, msg = HOST.verify_signature(hash, id, ssub(sig, 1, siglen), ssub(text, 1, textlen))
  if ok then return true, nil end
  return false, msg
end

-- handle:requestHeaders(): the request's header map from either direction (Envoy 1.40; main calls
-- it downstreamRequestHeaders). A wrapper of its own (not headers()'s), always modifiable, and a
-- change through it never clears the route cache (observed). From the request path it is the map
-- headers() changes; a change after the headers went on still reaches an upstream whose connection
-- was not yet open when they did (as the emulated router always is). From the response path it is
-- the request as the router sent it; changes there reach nothing.
function Handle.requestHeaders(self)
  local h = handle_state(self, "requestHeaders")
  local c = h.cache.request_headers
  if c then return c end
  local store
  if h.which == "request" then
    store = h.hs
    c = new_headermap({store = store, scope = h.scope, modifiable = function()
      if h.headers_continued then h.late_headers = true end
      return true
    end})
  else
    local stream = h.stream
    stream.request_store = stream.request_store or store_from_blob(HOST.request_headers(stream.ctx), INLINE_REQUEST)
    c = new_headermap({store = stream.request_store, scope = h.scope, modifiable = function() return true end})
  end
  h.cache.request_headers = c
  return c
end

handle_object("virtualHost", function(h) return new_virtual_host({scope = h.scope}) end)
handle_object("route", function(h) return new_route({scope = h.scope, handle = h}) end)
handle_object("connectionStreamInfo", function(h) return new_connection_stream_info({scope = h.scope}) end)
---------------------------------------------------------------------------------------------------
-- handle:stats(): counters, gauges and histograms in the filter's stats scope
-- (http.<hcm prefix>.lua.[<stat_prefix>.]<name>). The values live in the host, shared by every
-- script of the filter as Envoy's stats store is. These objects are not tied to a coroutine: they
-- survive yields and streams (observed). Amounts go through luaL_checkinteger: numeric strings are
-- accepted, fractions truncated, and anything at or past 2^63 wraps negative.

local STAT = setmetatable({}, {__mode = "k"})
local function stat_class(methods)
  local proto = newproxy(true)
  getmetatable(proto).__index = methods
  return function(st)
    local p = newproxy(proto)
    STAT[p] = st
    return p
  end
end

local STAT_KIND = {
  scope = mangled(HTTP_NS, "StatsScopeWrapper"), counter = mangled(HTTP_NS, "CounterWrapper"),
  gauge = mangled(HTTP_NS, "GaugeWrapper"), histogram = mangled(HTTP_NS, "HistogramWrapper"),
}

local function stat_self(self, kind, fname)
  local st = STAT[self]
  if st == nil or st.kind ~= kind then
    error(receiver_error(fname, STAT_KIND[kind], self), 3)
  end
  return st
end

local TWO63 = 9223372036854775808
local function stat_amount(n, i, v, fname)
  local x = tonumber(v)
  if x == nil then error(argerr(i, "number", fname, n, v, 3), 3) end
  if x ~= x or x >= TWO63 or x < -TWO63 then return -1 end
  return x >= 0 and floor(x) or -floor(-x)
end

local Counter, Gauge, Histogram, StatsScope = {}, {}, {}, {}
local new_counter, new_gauge, new_histogram = stat_class(Counter), stat_class(Gauge), stat_class(Histogram)

-- HOST.stat(op, name, amount): op 1 counter add, 2 gauge add, 3 gauge set, 4 histogram record.
local function stat_step(kind, fname, op, amount)
  return function(self)
    local st = stat_self(self, kind, fname)
    HOST.stat(op, st.name, amount)
  end
end
local function stat_value(kind, op)
  return function(self)
    local st = stat_self(self, kind, "value")
    return HOST.stat(op, st.name, 0)
  end
end
-- `sign` * the amount argument; a negative amount is refused with `negative`.
local function stat_amount_op(kind, fname, op, sign, negative)
  return function(self, ...)
    local st = stat_self(self, kind, fname)
    local x = stat_amount(select("#", ...), 1, ..., fname)
    if x < 0 then error(negative, 2) end
    HOST.stat(op, st.name, sign * x)
  end
end

Counter.inc = stat_step("counter", "inc", 1, 1)
Counter.add = stat_amount_op("counter", "add", 1, 1, "counter add amount must be non-negative")
Counter.value = stat_value("counter", 1)
Gauge.add = stat_amount_op("gauge", "add", 2, 1, "gauge add amount must be non-negative")
Gauge.sub = stat_amount_op("gauge", "sub", 2, -1, "gauge sub amount must be non-negative")
Gauge.inc = stat_step("gauge", "inc", 2, 1)
Gauge.dec = stat_step("gauge", "dec", 2, -1)
Gauge.set = stat_amount_op("gauge", "set", 3, 1, "gauge set value must be non-negative")
Gauge.value = stat_value("gauge", 2)
Histogram.recordValue = stat_amount_op("histogram", "recordValue", 4, 1, "histogram value must be non-negative")

local HISTOGRAM_UNITS = {ms = true, milliseconds = true, microseconds = true, nanoseconds = true, bytes = true,
                         unspecified = true}

-- scope:counter(name) / scope:gauge(name): the stat exists from here on (HOST.stat creates it).
local function stat_maker(kind, op, new)
  return function(self, ...)
    stat_self(self, "scope", kind)
    local name = arg_string(select("#", ...), 1, ..., kind)
    HOST.stat(op, name, 0)
    return new({kind = kind, name = name})
  end
end
StatsScope.counter = stat_maker("counter", 1, new_counter)
StatsScope.gauge = stat_maker("gauge", 2, new_gauge)
function StatsScope.histogram(self, ...)
  stat_self(self, "scope", "histogram")
  local n, name, unit = select("#", ...), ...
  name = arg_string(n, 1, name, "histogram")
  if unit ~= nil then
    unit = arg_string(n, 2, unit, "histogram")
    if not HISTOGRAM_UNITS[unit] then
      error("invalid histogram unit '" .. unit .. "', expected 'ms', 'milliseconds', 'microseconds', " ..
            "'nanoseconds', 'bytes', or 'unspecified'", 2)
    end
  end
  HOST.stat(4, name, -1)
  return new_histogram({kind = "histogram", name = name})
end

local STATS_SCOPE
function Handle.stats(self)
  handle_state(self, "stats")
  STATS_SCOPE = STATS_SCOPE or stat_class(StatsScope)({kind = "scope"})
  return STATS_SCOPE
end

-- Explicit, so it clears whatever the filter's clear_route_cache says (that one governs only the
-- clearing that header changes do).
function Handle.clearRouteCache(self)
  local h = handle_state(self, "clearRouteCache")
  if h.which == "request" then h.clear_route_explicit = true end
end

function Handle.setUpstreamOverrideHost(self, ...)
  local h = handle_state(self, "setUpstreamOverrideHost")
  local n, host, strict = select("#", ...), ...
  host = arg_string(n, 1, host, "setUpstreamOverrideHost")
  if not HOST.is_ip_authority(host) then error("host is not a valid IP address", 2) end
  if n >= 2 and type(strict) ~= "boolean" then error(argerr(2, "boolean", "setUpstreamOverrideHost", n, strict), 2) end
  -- Observable only when strict: no test cluster has the host, so the router answers 503.
  if h.which == "request" and strict == true then h.stream.override_strict = true end
end

local new_handle = class(Handle)

---------------------------------------------------------------------------------------------------
-- Driving one direction of one stream, as Envoy's Filter / StreamHandleWrapper do:
-- headers (start), then data, then trailers, then a pending callout completes.

M.functions = {}

local function finish_resume(h, ok, err)
  h.live = false
  kill_scope(h)
  if not ok then
    h.failed = err
    return
  end
  if co_status(h.co) == "suspended" and h.state == RUNNING then
    h.failed = "script performed an unexpected yield"
  end
end

local function resume(h, ...)
  h.state = RUNNING
  h.live = true
  local ok, err = co_resume(h.co, ...)
  if not ok and type(err) ~= "string" then
    -- Envoy reads the error with lua_tostring: numbers convert, anything else is unnamed.
    err = type(err) == "number" and tostr(err) or "unspecified lua error"
  end
  finish_resume(h, ok, err)
end

-- The script's error ends both handles of the stream (Filter::scriptError).
local function script_error(h)
  M.errors = M.errors + 1
  script_log("error", tostring(h.failed))
  h.dead = true
  if h.stream.request_handle then h.stream.request_handle.dead = true end
end

local function continue_headers(h)
  if not h.headers_continued then
    h.headers_continued = true
    -- What goes on to the next filter is the map as it is now; setBytes() can still change
    -- content-length later, but those headers have left.
    h.sent_headers = h.hs.dirty and store_out(h.hs) or false
  end
end

-- A script waiting in body(): resumed with what luaBody returns now.
local function resume_body(h)
  local _, res = body_result(h, h.wrap_body)
  if res == nil then resume(h) else resume(h, res) end
end

local function complete_call(h)
  -- onSuccess: resume with (headers, body); if the script then runs to the end, continue.
  local res = h.call_result
  h.call_result = nil
  resume(h, res[1], res[2])
  if h.failed then script_error(h) return end
  if h.state == RUNNING then continue_headers(h) end
end

-- setBytes() on a chunk sets content-length in the header map after the headers went on. In the
-- request path that still reaches the upstream, whose connection was not open when they did (as
-- a late requestHeaders() change does; observed: a grown chunk arrives with the new length); in
-- the response path the client already has them (the host cuts the body to the old length).
local function chunk_length_changed(h)
  if h.which == "request" and h.headers_continued then h.late_headers = true end
end

-- One data frame. Chunks that go on are appended to `passed`; while the filter stops iteration
-- the connection manager buffers them (that buffer is what body() returns, and what goes on
-- when iteration continues).
local function on_data(h, data, end_stream, passed)
  h.end_stream = end_stream
  h.saw_body = true
  if h.state == WAIT_CHUNK then
    local chunk = data
    local c = new_buffer({scope = h.scope, headers = h.hs, get = function() return chunk end,
                          set = function(d) chunk = d; chunk_length_changed(h) end})
    resume(h, c)
    data = chunk
  elseif h.state == WAIT_BODY and end_stream then
    h.body = (h.body or "") .. data  -- callbacks_.addData(data)
    resume_body(h)
    data = nil
  elseif h.state == WAIT_TRAILERS and end_stream then
    resume(h)
  end
  if h.failed then
    script_error(h)
    if data ~= nil then passed[#passed + 1] = data end
    return
  end
  if data == nil then return end
  if h.state == HTTP_CALL or h.state == WAIT_BODY then
    h.body = (h.body or "") .. data
  elseif h.state ~= RESPONDED then
    continue_headers(h)
    passed[#passed + 1] = data
  end
end

-- One direction of a stream. `stream` is what both directions share (nil: a new stream).
-- Returns nil when the script has no such function, else
--   stream, sent headers|false, body|false, clear_route, extra|false
-- where extra (rare: trailers, a local reply, log lines) is a table.
function M.run(fname, ctx, stream, hblob, body, tblob, split)
  local fn = M.functions[fname]
  if fn == nil then return nil end
  if stream == nil then stream = {ctx = ctx, dyn = {}, fs = {}, facts = false} end
  local which = fname == "envoy_on_request" and "request" or "response"
  local h = {
    which = which, ctx = ctx, stream = stream,
    hs = store_from_blob(hblob, which == "request" and INLINE_REQUEST or INLINE_RESPONSE),
    end_stream = body == nil and tblob == nil, saw_body = false, buffered_body = false,
    headers_continued = false, state = RUNNING, live = false, scope = {live = true}, cache = {},
    keys = {}, body = nil,
  }
  h.modifiable = function()
    if not h.headers_continued and which == "request" then h.clear_route = true end
    return not h.headers_continued
  end
  if which == "request" then stream.request_handle = h end
  M.executions = M.executions + 1
  h.co = co_create(fn)
  local handle = new_handle(h)

  -- decodeHeaders / encodeHeaders
  resume(h, handle)
  if h.failed then script_error(h)
  elseif h.state ~= WAIT_BODY and h.state ~= HTTP_CALL and h.state ~= RESPONDED then continue_headers(h) end

  -- decodeData / encodeData. Envoy's HTTP/1 codecs deliver a body and then, at the end of the
  -- message, an empty chunk with end_stream (observed: bodyChunks() sees two chunks); with
  -- trailers, or for a local reply, the body is one chunk.
  local trailers = tblob and store_from_blob(tblob, which == "request" and INLINE_REQUEST_TRAILERS
                                                          or INLINE_RESPONSE_TRAILERS)
  local passed = {}
  if body ~= nil and not h.dead then
    if split and tblob == nil then
      on_data(h, body, false, passed)
      if not h.dead then on_data(h, "", true, passed) else passed[#passed + 1] = "" end
    else
      on_data(h, body, tblob == nil, passed)
    end
  elseif body ~= nil then
    passed[1] = body
  end

  -- decodeTrailers / encodeTrailers
  if trailers ~= nil and not h.dead then
    h.end_stream = true
    h.trailers = trailers
    if h.state == WAIT_CHUNK then
      resume(h)
    elseif h.state == WAIT_BODY then
      resume_body(h)
    end
    if not h.failed and h.state == WAIT_TRAILERS then
      h.live = true
      local t = trailers_object(h)
      resume(h, t)
    end
    if h.failed then script_error(h)
    elseif h.state ~= HTTP_CALL and h.state ~= RESPONDED then continue_headers(h) end
  end

  -- A synchronous callout completes after the rest of the stream has arrived.
  while not h.dead and h.state == HTTP_CALL do complete_call(h) end
  if not h.dead and h.state == WAIT_BODY and h.end_stream and body == nil then
    -- Stream ended with headers only while waiting (cannot happen after start; kept for safety).
    resume_body(h)
    if h.failed then script_error(h) end
  end

  if not h.headers_continued then continue_headers(h) end
  if h.late_headers then h.sent_headers = store_out(h.hs) end
  local body_out = body
  if body ~= nil or h.body ~= nil then
    body_out = concat(passed) .. (h.body or "")
    if body_out == body then body_out = body end
  end
  -- Every object of this run is dead from here on.
  for i = 1, NCREATED do STATE[CREATED[i]] = nil; CREATED[i] = nil end
  NCREATED = 0
  local reply = h.state == RESPONDED and h.reply or nil
  local extra = false
  local tdirty = trailers and trailers.dirty
  local drain, strict = stream.drain, stream.override_strict
  if reply or tdirty or NLOGS > 0 or drain or strict then
    extra = {trailers = tdirty and store_blob(trailers) or nil, logs = M.take_logs(), drain = drain,
             override_strict = strict}
    if reply then
      extra.reply_status, extra.reply_headers, extra.reply_body = reply.status, store_blob(reply.headers), reply.body
    end
  end
  -- clear_route: 2 when the script asked for it, true when header changes did, else false. Either
  -- way the stream facts (route name, metadata) are fetched again when next asked.
  local clear = h.clear_route_explicit and 2 or h.clear_route or false
  if clear then stream.facts = false end
  return stream, h.sent_headers, body_out ~= body and body_out or false, clear, extra
end

-- Log lines go out as "level\0length\0message" each: a message may hold NUL bytes itself.
function M.take_logs()
  if NLOGS == 0 then return nil end
  local parts = {}
  for i = 1, NLOGS, 2 do
    local msg = LOGS[i + 1]
    parts[#parts + 1] = LOGS[i] .. "\0" .. #msg .. "\0" .. msg
  end
  LOGS, NLOGS = {}, 0
  return concat(parts)
end

function M.counters()
  return M.errors, M.executions
end

-- host.inline: {request_headers, request_trailers, response_headers, response_trailers} of
-- {name = true} sets.
function M.init(host)
  HOST = host
  local inline = host.inline
  INLINE_REQUEST, INLINE_REQUEST_TRAILERS = inline.request_headers, inline.request_trailers
  INLINE_RESPONSE, INLINE_RESPONSE_TRAILERS = inline.response_headers, inline.response_trailers
end

-- Load the user's script the way Envoy does (luaL_dostring: the chunk is named by its own text),
-- then read the entry points once, as registerGlobal does at configuration time.
function M.load(code, G)
  local chunk, err = loadstring(code, code)
  if not chunk then return err end
  setfenv(chunk, G)
  local ok, rerr = pcall(chunk)
  if not ok then return tostring(rerr) end
  M.functions.envoy_on_request = rawget(G, "envoy_on_request")
  M.functions.envoy_on_response = rawget(G, "envoy_on_response")
  if type(M.functions.envoy_on_request) ~= "function" then M.functions.envoy_on_request = nil end
  if type(M.functions.envoy_on_response) ~= "function" then M.functions.envoy_on_response = nil end
  return nil
end

return M
