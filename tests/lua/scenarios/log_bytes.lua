-- Log lines carry every byte a script hands over, NUL bytes included: Envoy does not cut a
-- message at its first NUL.
function envoy_on_request(handle)
  local mode = handle:headers():get("x-mode")
  if mode == "callout" then
    local _, body = handle:httpCall("blob", {[":method"] = "GET", [":path"] = "/bin", [":authority"] = "blob"},
                                    nil, 1000)
    handle:logInfo("body " .. body)
    handle:logInfo(#body)
  elseif mode == "literal" then
    handle:logWarn("a\0b\0")
    handle:logErr("\0")
    handle:logInfo("")
    handle:logDebug("after")
  end
end
