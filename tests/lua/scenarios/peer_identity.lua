-- Authorizes on the peer's SPIFFE ID (issue 11 item 5) and reports what connection():ssl() says,
-- so the emulator's answers can be held against live Envoy's for the same certificate.
local ALLOWED = "spiffe://cluster.local/ns/default/sa/productpage"

function envoy_on_request(handle)
  local ssl = handle:connection():ssl()
  if ssl == nil then
    handle:respond({[":status"] = "403"}, "plaintext: no peer identity")
    return
  end
  local uris = ssl:uriSanPeerCertificate()
  local peer = uris[1] or ""
  local h = handle:headers()
  h:add("x-peer", peer)
  h:add("x-peer-count", tostring(#uris))
  h:add("x-local", ssl:uriSanLocalCertificate()[1] or "")
  h:add("x-presented", tostring(ssl:peerCertificatePresented()))
  h:add("x-validated", tostring(ssl:peerCertificateValidated()))
  h:add("x-digest", ssl:sha256PeerCertificateDigest())
  h:add("x-serial", ssl:serialNumberPeerCertificate())
  h:add("x-issuer", ssl:issuerPeerCertificate())
  h:add("x-subject", ssl:subjectPeerCertificate())
  h:add("x-dns", table.concat(ssl:dnsSansPeerCertificate(), ","))
  h:add("x-tls", ssl:tlsVersion())
  h:add("x-cipher", ssl:ciphersuiteString() .. " " .. ssl:ciphersuiteId())
  h:add("x-valid", tostring(ssl:validFromPeerCertificate()) .. "-" .. tostring(ssl:expirationPeerCertificate()))
  local parsed = ssl:parsedSubjectPeerCertificate()
  h:add("x-cn", parsed and parsed:commonName() or "")
  h:add("x-same", tostring(handle:streamInfo():downstreamSslConnection():uriSanPeerCertificate()[1] == peer))
  h:add("x-pem", ssl:urlEncodedPemEncodedPeerCertificate())
  h:add("x-chain", ssl:urlEncodedPemEncodedPeerCertificateChain())
  h:add("x-oids", table.concat(ssl:oidsPeerCertificate(), ","))
  h:add("x-local-oids", table.concat(ssl:oidsLocalCertificate(), ","))
  h:add("x-local-dns", table.concat(ssl:dnsSansLocalCertificate(), ","))
  h:add("x-local-subject", ssl:subjectLocalCertificate())
  h:add("x-org", parsed and table.concat(parsed:organizationName(), ",") or "")
  -- the session id is random live: only its shape can agree
  local sid = ssl:sessionId()
  h:add("x-session", #sid .. (sid:match("^%x*$") and " hex" or " not hex"))
  if peer ~= ALLOWED then
    handle:respond({[":status"] = "403"}, "peer " .. peer .. " is not allowed")
  end
end
