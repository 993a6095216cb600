"""The pytest plugin (registered by the package's pytest11 entry point) as a user meets it."""

import http.client

from envoyext.artifact import Artifact


def test_echo_upstream_echoes_and_records(echo_upstream):
    conn = http.client.HTTPConnection(*echo_upstream.address("upstream"))
    conn.request("POST", "/p?x=1", body=b"hi", headers={"x-a": "1"})
    resp = conn.getresponse()
    assert resp.status == 200 and b'"x-a": "1"' in resp.read()
    [received] = echo_upstream.received["upstream"]
    assert (received.method, received.path, received.body) == ("POST", "/p?x=1", b"hi")


def test_envoy_filter_runs_a_filter_in_live_envoy(envoy_filter, tmp_path):
    script = tmp_path / "f.lua"
    script.write_text("function envoy_on_request(h) h:headers():add('x-from', envoyext_config.who) end\n"
                      "function envoy_on_response(h) h:logInfo('done') end\n")
    envoy = envoy_filter(Artifact("lua", script, "f"), config={"who": "pytest"},
                         clusters={"auth": {"status": 204}})
    r = envoy.request("GET", "/x", headers={"x-a": ["1", "2"]})
    assert r.status == 200
    assert ("x-from", "pytest") in envoy.received()[-1].headers
    assert [l.message for l in envoy.logs()] == ["done"]
    assert envoy.stats()["http.ingress_http.lua.executions"] == 2
