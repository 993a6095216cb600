-- Lua libraries (filter.yaml's lua_libraries) as artifact.lua_code appends them: after this script.
local at_top_level = type(pw_match) -- the library's global is not set yet while this runs

function envoy_on_request(handle)
  local headers = handle:headers()
  local probe = headers:get("x-probe")
  if probe == "top-level" then
    handle:respond({[":status"] = "200", ["x-top-level"] = at_top_level}, "")
  elseif probe == "match" then
    local matches = pw_match.string_matcher({safe_regex = {regex = "a+b"}}, "probe")
    handle:respond({[":status"] = matches(headers:get("x-arg") or "") and "200" or "403"}, "")
  elseif probe == "error" then
    error("boom at line 13")
  end
end
