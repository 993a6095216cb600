function envoy_on_request(h) end
