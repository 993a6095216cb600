-- golden-test script
function envoy_on_request(h) h:headers():add("x-golden", envoyext_config.header) end
