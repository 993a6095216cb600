"""`envoyext jwt ...`: test tokens for a mesh's RequestAuthentications. Parse, call, print."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from envoyext.cli_support import key_values, user_errors
from envoyext.errors import UserError

DEFAULT_KEYS = Path(".envoyext") / "jwt"
_keys = click.option("--keys", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_KEYS,
                     show_default=True, help="Directory of issuer keys (made on first use, keys 0600).")


@click.group()
def jwt() -> None:
    """Test JWTs: sign tokens for an issuer, print its JWKS, serve it for jwksUri."""


@jwt.command()
@click.option("--issuer", required=True, help="The iss claim (a RequestAuthentication's jwtRules[].issuer).")
@click.option("--sub", "subject", required=True, help="The sub claim.")
@click.option("--aud", "audiences", multiple=True, help="An audience (repeatable).")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE",
              help="Another claim (repeatable); VALUE is JSON if it parses as JSON, else a string.")
@click.option("--expires-in", type=int, default=3600, show_default=True, help="Seconds until it expires.")
@click.option("--expired", is_flag=True, help="A token that expired a minute ago (to see a 401).")
@_keys
@user_errors
def mint(issuer, subject, audiences, claims, expires_in, expired, keys):
    """Print a signed RS256 token (the only output, for `$(envoyext jwt mint ...)`)."""
    from envoyext.mesh import tokens
    extra: dict[str, object] = {}
    for name, value in key_values(claims, "--claim", "group=admins").items():
        try:
            extra[name] = json.loads(value)
        except ValueError:
            extra[name] = value
    if expires_in <= 0 and not expired:
        raise UserError(f"--expires-in {expires_in} is not a lifetime", field="--expires-in",
                        fix="give a number of seconds above 0, or --expired for an expired token")
    token = tokens.KeyStore(keys).mint(issuer, subject, audiences=list(audiences), claims=extra,
                                       expires_in=0 if expired else expires_in)
    click.echo(token)


@jwt.command()
@click.option("--issuer", required=True, help="The issuer whose public key set to print.")
@_keys
@user_errors
def jwks(issuer, keys):
    """Print the issuer's JWKS (public key only), for a jwtRules[].jwks."""
    from envoyext.mesh import tokens
    click.echo(tokens.KeyStore(keys).jwks(issuer))


@jwt.command()
@click.option("--port", type=int, default=0, help="Port on 127.0.0.1 (default: any free one).")
@click.option("--issuer", "issuers", multiple=True, help="Make sure this issuer has a key (repeatable).")
@_keys
@user_errors
def serve(port, issuers, keys):
    """Serve every issuer's JWKS on loopback until Ctrl-C, printing each jwksUri."""
    from envoyext.mesh import tokens
    try:
        server = tokens.JwksServer(tokens.KeyStore(keys), port=port)
    except OSError as e:
        raise UserError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}", field="--port",
                        fix="choose another port, or leave --port out") from None
    with server:
        for issuer in issuers:
            server.url(issuer)
        for issuer in server.store.issuers():
            click.echo(f"{issuer}\t{server.url(issuer)}")
        try:
            click.echo("Ctrl-C to stop")   # inside the try: the interrupt may come right after it
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            click.echo("stopped")
