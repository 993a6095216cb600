-- Route metadata, dynamic metadata across directions, stream info, TLS, crypto, config.
function envoy_on_request(handle)
  local info = handle:streamInfo()
  handle:logInfo("protocol=" .. info:protocol() .. " route=" .. info:routeName() ..
                 " sni=[" .. info:requestedServerName() .. "]")
  handle:logInfo("ssl=" .. tostring(handle:connection():ssl()) .. " " .. tostring(info:downstreamSslConnection()))
  local remote = info:downstreamRemoteAddress()
  handle:logInfo("remote is loopback: " .. tostring(remote:sub(1, 10) == "127.0.0.1:"))
  local md = handle:metadata()
  local tier = md:get("tier")
  if tier then
    handle:headers():add("x-tier", tier)
    local limits = md:get("limits")
    handle:headers():add("x-limit-count", #limits)
    handle:headers():add("x-limit-first", limits[1])
    handle:headers():add("x-owner", md:get("owner").team)
  end
  handle:logInfo("missing metadata key returns " .. select("#", md:get("nope")))
  local dm = info:dynamicMetadata()
  dm:set("envoyext.lua", "request_path", handle:headers():get(":path"))
  dm:set("envoyext.lua", "list", {"a", "b"})
  dm:set("envoyext.lua", "flag", true)
  handle:logInfo("dyn absent returns " .. select("#", dm:get("other")))
  handle:headers():add("x-ts-type", type(handle:timestamp()))
  handle:headers():add("x-b64", handle:base64Escape("hello\0world"))
  handle:headers():add("x-ts-res", EnvoyTimestampResolution.MILLISECOND .. "/" .. EnvoyTimestampResolution.MICROSECOND)
  if envoyext_config ~= nil then
    handle:headers():add("x-config-greeting", envoyext_config.greeting)
  end
  if handle:headers():get("x-bad-import") then
    handle:headers():add("x-bad-key", tostring(handle:importPublicKey("not a key", 9):get()))
  end
  if handle:headers():get("x-verify") then
    local key = handle:importPublicKey(from_hex(PUBKEY), #PUBKEY / 2):get()
    local ok, err = handle:verifySignature("sha256", key, from_hex(SIGNATURE), #SIGNATURE / 2,
                                           "hello", 5)
    handle:headers():add("x-verified", tostring(ok))
    local ok2, err2 = handle:verifySignature("sha256", key, from_hex(SIGNATURE), #SIGNATURE / 2,
                                             "bad", 3)
    handle:headers():add("x-verified-bad", tostring(ok2) .. " " .. err2)
    local ok3, err3 = handle:verifySignature("md5", key, from_hex(SIGNATURE), #SIGNATURE / 2, "hello", 5)
    handle:headers():add("x-verified-md5", tostring(ok3) .. " " .. err3)
    -- Envoy caches the key wrapper for the rest of the resume: a second import returns the first.
    handle:headers():add("x-second-import-is-first", tostring(handle:importPublicKey("not a key", 9):get() == key))
  end
end

function envoy_on_response(handle)
  local dm = handle:streamInfo():dynamicMetadata()
  local mine = dm:get("envoyext.lua")
  if mine then
    handle:headers():add("x-seen-path", mine.request_path)
    handle:headers():add("x-seen-list", table.concat(mine.list, ","))
    handle:headers():add("x-seen-flag", tostring(mine.flag))
  end
end

function from_hex(s)
  return (s:gsub("..", function(cc) return string.char(tonumber(cc, 16)) end))
end

-- A throwaway RSA-1024 public key (DER, hex) and its SHA-256 PKCS#1 v1.5 signature of "hello".
PUBKEY = "30819f300d06092a864886f70d010101050003818d0030818902818100b7ee7bcae655937c5950412a65b1ea66dc7d844e4857c714e9a1da657bde4b57f19a5c44b11e330e2b8e3c6e2a95afbd84a871fa84b36bba1c083defdbb702e8894a0394178c48e605eebb255899d5b960ab6d38c1ac275ed6f30985cbcc1ab5d1cc4f8778d3a6ee3f73833689a1464fe0c259bb17f21f4aaafcec47c13007170203010001"
SIGNATURE = "330c78859e9f49d34a76a614b0bdd8c32cc4f815ee322fbd116b877c62f54b53c2109097b2897676769f0160dd032836d4ad35da86d96046eefd6243f901aeccef741772c0998cf657debd39619008d7b2c59d9cfe47a40b82e003ae883f2d9d095574bf1f597f122f793c90290def31b3c5a7d0c2a794e8725fd4d1e6fecc92"
