-- 403 unless the downstream peer's SPIFFE ID (its certificate's URI SAN) is the one allowed.
function envoy_on_request(handle)
  local allow = (envoyext_config or {}).allow or ""
  local ssl = handle:connection():ssl()
  local peer = ssl and ssl:uriSanPeerCertificate()[1] or ""
  if peer ~= allow then
    handle:respond({[":status"] = "403"}, "peer [" .. peer .. "] is not allowed")
    return
  end
  handle:headers():replace("x-peer", peer)
end
