-- A Lua filter for tests/test_scenario_format.py: logs what it sees of the request (headers
-- as pseudo-headers and all, but the per-request x-request-id), the route metadata key `who`, and
-- the status of the response.
function envoy_on_request(handle)
  local seen = {}
  for name, value in pairs(handle:headers()) do
    if name ~= "x-request-id" then seen[#seen + 1] = name .. "=" .. value end
  end
  handle:logInfo("request " .. table.concat(seen, " "))
  local who = handle:metadata():get("who")
  handle:logInfo("metadata who=" .. tostring(who))
end

function envoy_on_response(handle)
  handle:logInfo("response " .. handle:headers():get(":status"))
end
