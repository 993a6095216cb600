-- Header manipulation as gateways write it: tag, normalise, strip, and echo what was seen.
function envoy_on_request(handle)
  local h = handle:headers()
  h:add("x-edge", "lua")
  h:replace("x-env", "prod")
  h:remove("x-internal-secret")
  h:add("content-type", "extra")          -- an Envoy inline header: appended with ","
  h:add("X-Mixed-Case", 42)               -- lower-cased, number coerced
  local n = h:getNumValues("x-multi")
  h:add("x-multi-count", n)
  if n > 0 then
    h:add("x-multi-joined", h:get("x-multi"))
    h:add("x-multi-first", h:getAtIndex("x-multi", 0))
    h:add("x-multi-last", h:getAtIndex("x-multi", n - 1))
  end
  handle:logInfo("multi beyond end: " .. select("#", h:getAtIndex("x-multi", n)))
  handle:logInfo("absent get returns " .. select("#", h:get("x-nope")) .. " values")
  local seen = {}
  for k, v in pairs(h) do
    if k:sub(1, 2) == "x-" and k ~= "x-request-id" then seen[#seen + 1] = k .. "=" .. v end
  end
  handle:logDebug("x-headers: " .. table.concat(seen, ";"))
end

function envoy_on_response(handle)
  local h = handle:headers()
  h:add("x-served-by", "lua")
  h:replace("content-type", "application/x-lua")
  handle:logWarn("status " .. h:get(":status"))
end
