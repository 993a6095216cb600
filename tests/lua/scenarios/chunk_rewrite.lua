-- Rewriting response body chunks after the headers went on: setBytes() sets content-length in a
-- header map the client already has, so it reads that many bytes of what the script wrote.
-- (Not the request side: whether a grown request chunk's new length reaches the upstream depends
-- on whether its connection was open yet, a race live.)
local function grow(handle)
  for chunk in handle:bodyChunks() do
    if chunk:length() > 0 then
      chunk:setBytes(chunk:getBytes(0, chunk:length()) .. " and then some")
    end
  end
end

function envoy_on_response(handle)
  if handle:requestHeaders():get("x-grow") == "response" then grow(handle) end
end
