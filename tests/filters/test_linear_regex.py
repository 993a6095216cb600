"""A pathological Origin against a pathological regex policy is answered, correctly, by the cors filter
in both languages, in the emulator, in live Envoy and by Envoy's own cors filter (RE2) with the same
policy: the library's regex engines are linear-time (envoyext/sdk/pw_match.c, pw_match.lua). With the
backtracking engines they replaced, each of these requests costs about 2^8000 steps and is never
answered. The work itself is counted in tests/sdk/test_match.py; here it is the verdicts."""

import json

import pytest
import yaml

from tests.conftest import run_cli

# Bytes of Origin: far over any backtracking budget, and under the 8190-byte header line the live
# runner's upstream (aiohttp) accepts, so the live verdict is the filter's, not the upstream's 400.
N = 8_000
PATTERNS = [r"^(a|a)*b$", r"(a+)+\.example\.com", r"https://(a|aa)+\.example\.com"]


def scenario() -> dict:
    def request(origin: str, method: str = "GET", **headers) -> dict:
        return {"method": method, "path": "/", "headers": {"origin": origin, **headers}}

    refused = {"headers_absent": ["access-control-allow-origin"]}
    return {
        "description": "Origins of 8k bytes built to make a backtracking regex engine take exponential time.",
        "config": {"allow_origins": [{"regex": p} for p in PATTERNS], "allow_methods": ["GET"]},
        "oracle": {
            "http_filters": [{"name": "envoy.filters.http.cors", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}],
            "typed_per_filter_config": {"envoy.filters.http.cors": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
                "allow_origin_string_match": [{"safe_regex": {"regex": p}} for p in PATTERNS],
                "allow_methods": "GET"}},
            "compare": ["status", "headers", "body", "upstream"],
        },
        "cases": [
            {"name": "a's then a bang is refused", "request": request("a" * N + "!"), "expect": refused},
            {"name": "a's then b is allowed", "request": request("a" * N + "b"),
             "expect": {"headers": {"access-control-allow-origin": "a" * N + "b"}}},
            {"name": "a long host that is not quite example.com", "request": request("a" * N + ".example.co"),
             "expect": refused},
            {"name": "a long https host", "request": request("https://" + "a" * N + ".example.com"),
             "expect": {"headers": {"access-control-allow-origin": "https://" + "a" * N + ".example.com"}}},
            {"name": "a preflight from a pathological origin goes upstream",
             "request": request("https://" + "a" * N + "!", "OPTIONS", **{"access-control-request-method": "GET"}),
             "expect": {"status": 200, **refused}},
        ],
    }


def project_with_one_scenario(tmp_path, lang: str, doc: dict):
    target = tmp_path / "x"
    assert run_cli("new", "cors", "x", "--lang", lang, "--dir", target).returncode == 0
    for old in (target / "scenarios").glob("*.yaml"):
        old.unlink()
    (target / "scenarios" / "one.yaml").write_text(yaml.safe_dump(doc, width=1 << 20))
    return target


@pytest.mark.parametrize("lang", ["c", "lua"])
def test_pathological_origin_is_answered_everywhere(tmp_path, lang):
    target = project_with_one_scenario(tmp_path, lang, scenario())
    r = run_cli("test", target, "--json", timeout=600)
    doc = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    results = doc.get("results", [])
    failed = [x["case"] for x in results if not x["passed"]]
    assert r.returncode == 0 and results and not failed, (failed, r.stderr[-2000:])
    assert len(results) == len(scenario()["cases"])
    for x in results:
        assert {"emulated", "live", "native"} <= set(x["observations"]), x["case"]


def test_negative_control_a_wrong_verdict_fails(tmp_path):
    # The same run catches a wrong expectation: the long a's-then-b origin is allowed, not refused.
    doc = scenario()
    doc.pop("oracle")
    doc["cases"] = [{**doc["cases"][1], "expect": {"headers_absent": ["access-control-allow-origin"]}}]
    target = project_with_one_scenario(tmp_path, "c", doc)
    r = run_cli("test", target, "--only", "unit", "--json", timeout=600)
    assert r.returncode != 0
    assert not json.loads(r.stdout)["results"][0]["passed"]


UNSUPPORTED = {
    "config": {"allow_origins": ["https://a.example", {"regex": r"https://x\b"}]},
    "cases": [{"name": "any", "request": {"method": "GET", "path": "/", "headers": {"origin": "https://a.example"}},
               "expect": {"status": 200}}],
}
CAUSE = r'allow_origins[1].regex: unsupported escape \b at offset 9 (pattern "https://x\b")'


def test_an_unsupported_regex_is_refused_naming_the_field_c(tmp_path):
    # Wasm: the filter refuses its configuration, so Envoy refuses the filter: one line, exit 2,
    # with the field, the reason and the pattern (the filter's last error line, which Envoy shows).
    r = run_cli("test", project_with_one_scenario(tmp_path, "c", UNSUPPORTED))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and CAUSE in r.stderr, r.stderr


def test_an_unsupported_regex_is_logged_naming_the_field_lua(tmp_path):
    # Lua compiles its configuration on the first request (it cannot refuse it at load): the error
    # names the field in both runners, and the policy then allows no origin.
    r = run_cli("test", project_with_one_scenario(tmp_path, "lua", UNSUPPORTED), "--json")
    [result] = json.loads(r.stdout)["results"]
    for runner in ("emulated", "live"):
        assert any(CAUSE in line for line in result["observations"][runner]["logs"]), runner
