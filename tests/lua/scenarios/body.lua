-- Body handling: buffer and rewrite, stream chunks, wrap an absent body.
function envoy_on_request(handle)
  local mode = handle:headers():get("x-body")
  if mode == "rewrite" then
    local body = handle:body()
    local text = body:getBytes(0, body:length())
    handle:logInfo("first five: " .. body:getBytes(0, 5))
    local n = body:setBytes(string.upper(text) .. "!")
    handle:headers():add("x-new-length", n)
  elseif mode == "chunks" then
    local count, total = 0, 0
    for chunk in handle:bodyChunks() do
      count = count + 1
      total = total + chunk:length()
    end
    handle:logInfo("chunks=" .. count .. " bytes=" .. total)
  elseif mode == "wrap" then
    local body = handle:body(true)
    handle:logInfo("wrapped length " .. body:length())
    body:setBytes("filled in")
  elseif mode == "nil" then
    handle:logInfo("body() without a body returns " .. select("#", handle:body()) .. " values")
  elseif mode == "oob" then
    local body = handle:body()
    handle:logInfo(body:getBytes(2, body:length()))
  elseif mode == "twice" then
    for chunk in handle:bodyChunks() do end
    handle:body()
  end
end

function envoy_on_response(handle)
  if handle:headers():get("x-count-chunks") then
    local sizes = {}
    for chunk in handle:bodyChunks() do sizes[#sizes + 1] = chunk:length() end
    handle:logInfo("response chunks " .. table.concat(sizes, ","))
  elseif handle:headers():get("x-rewrite-response") then
    local body = handle:body()
    body:setBytes('{"rewritten":true}')
    handle:headers():replace("content-type", "application/json")
  end
end
