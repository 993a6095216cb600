local tag = envoyext_config.tag -- the configuration is there from the first line on
-- Envoy 1.40 behaviours scripts met in the wild, steered by the request's x-probe header.

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function add_twice(headers, names)
  for name in string.gmatch(names, "[^,]+") do
    headers:add(name, "a")
    headers:add(name, "b")
  end
end

function envoy_on_request(handle)
  local probe = handle:headers():get("x-probe")
  if probe == "add-twice" then
    add_twice(handle:headers(), handle:headers():get("x-arg") or "")
    handle:streamInfo():dynamicMetadata():set("fidelity", "resp", handle:headers():get("x-resp-arg") or "")
  elseif probe == "config" then
    handle:headers():add("x-tag-hex", hex(tag))
    handle:headers():add("x-tag-length", tostring(#tag))
  elseif probe == "error" then
    error("boom at line 24")
  elseif probe == "byte-length" then -- header values as the octets on the wire
    handle:headers():add("x-arg-length", tostring(#(handle:headers():get("x-arg") or "")))
    handle:streamInfo():dynamicMetadata():set("fidelity", "length", true)
  end
end

function envoy_on_response(handle)
  local md = handle:streamInfo():dynamicMetadata():get("fidelity")
  if md ~= nil and md.resp then add_twice(handle:headers(), md.resp) end
  if md ~= nil and md.length then
    handle:headers():add("x-up-length", tostring(#(handle:headers():get("x-up") or "")))
  end
end
