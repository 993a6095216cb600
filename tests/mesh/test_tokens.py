"""Test JWTs (envoyext.mesh.tokens, `envoyext jwt`): tokens verify against the store's JWKS with
PyJWT (and not against another key: control), keys are 0600 and never in the JWKS, the JWKS server
serves each issuer, and bad input is one line with exit code 2."""

import json
import stat
import urllib.request

import jwt
import pytest
from click.testing import CliRunner

from envoyext.cli import main
from envoyext.mesh import tokens

ISSUER = "https://issuer.test"


def verify(token: str, jwks: str, audience: str | None = "bookinfo") -> dict:
    key = jwt.PyJWKSet.from_json(jwks).keys[0].key
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=ISSUER)


def test_minted_tokens_verify_with_the_jwks_only(tmp_path):
    store = tokens.KeyStore(tmp_path)
    token = store.mint(ISSUER, "alice", audiences=["bookinfo"], claims={"group": "admins"})
    claims = verify(token, store.jwks(ISSUER))
    assert (claims["sub"], claims["group"], claims["exp"] - claims["iat"]) == ("alice", "admins", 3600)
    assert jwt.get_unverified_header(token)["kid"] == json.loads(store.jwks(ISSUER))["keys"][0]["kid"]
    with pytest.raises(jwt.InvalidSignatureError):   # control: another store's key
        verify(token, tokens.KeyStore(tmp_path / "other").jwks(ISSUER))
    with pytest.raises(jwt.InvalidSignatureError):
        verify(tokens.tampered(token), store.jwks(ISSUER))
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(store.mint(ISSUER, "alice", audiences=["bookinfo"], expires_in=0), store.jwks(ISSUER))


def test_keys_are_private_and_the_jwks_is_public(tmp_path):
    store = tokens.KeyStore(tmp_path)
    doc = json.loads(store.jwks(ISSUER))
    assert set(doc["keys"][0]) == {"kty", "alg", "use", "kid", "e", "n"}   # no private member (d, p, q...)
    pems = list(tmp_path.glob("*.pem"))
    assert len(pems) == 1 and stat.S_IMODE(pems[0].stat().st_mode) == 0o600
    assert store.issuers() == [ISSUER]


def test_jwks_server_serves_each_issuer(tmp_path):
    store = tokens.KeyStore(tmp_path)
    with tokens.JwksServer(store) as server:
        url = server.url(ISSUER)
        assert tokens.fetch_jwks(url, ISSUER) == store.jwks(ISSUER)
        assert tokens.fetch_jwks(url.replace("/jwks.json", "x/jwks.json"), ISSUER) is None   # 404: control
    assert tokens.fetch_jwks(url, ISSUER) is None   # stopped


def test_cli_mint_and_jwks(tmp_path):
    run = CliRunner().invoke
    keys = str(tmp_path / "keys")
    minted = run(main, ["jwt", "mint", "--issuer", ISSUER, "--sub", "alice", "--aud", "bookinfo",
                        "--claim", "level=3", "--keys", keys])
    assert minted.exit_code == 0, minted.output
    jwks = run(main, ["jwt", "jwks", "--issuer", ISSUER, "--keys", keys]).output
    assert verify(minted.output.strip(), jwks)["level"] == 3
    expired = run(main, ["jwt", "mint", "--issuer", ISSUER, "--sub", "a", "--expired", "--keys", keys]).output.strip()
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(expired, jwks, audience=None)


@pytest.mark.parametrize("args, where", [
    (["--claim", "novalue"], "--claim"),
    (["--expires-in", "0"], "--expires-in"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, where):
    r = CliRunner().invoke(main, ["jwt", "mint", "--issuer", ISSUER, "--sub", "a", "--keys", str(tmp_path), *args])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and where in lines[0] and "fix:" in lines[0], r.output


def test_fetch_jwks_of_nothing_is_none():
    assert tokens.fetch_jwks("http://127.0.0.1:9/jwks.json", ISSUER) is None
    with pytest.raises(OSError):   # the control: the port really is closed
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=2)
