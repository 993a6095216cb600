"""The test client: one HTTP/1.1 request to an Envoy listener, exactly as the scenario wrote it."""

from __future__ import annotations

import http.client
import ssl

from envoyext.messages import Request, Response


def send(host: str, port: int, rq: Request, tls: ssl.SSLContext | None = None) -> Response | None:
    """One request exactly as given (repeated headers and all); None if the stream was reset.
    Raises TimeoutError when no response comes within the case's `timeout_ms`. With `tls`, over
    TLS with that context (a case's mTLS peer certificate)."""
    timeout = rq.timeout_ms / 1000
    conn = (http.client.HTTPConnection(host, port, timeout=timeout) if tls is None
            else http.client.HTTPSConnection(host, port, timeout=timeout, context=tls))
    try:
        conn.putrequest(rq.method, rq.target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", rq.authority)
        for k, v in [*rq.headers, *rq.framing()]:
            if k != "host":
                conn.putheader(k, v)
        if rq.trailers:
            conn.endheaders()
            if rq.body:
                conn.send(b"%x\r\n%s\r\n" % (len(rq.body), rq.body))
            conn.send(b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in rq.trailers) + b"\r\n")
        else:
            conn.endheaders(rq.body or None)  # headers and body in one write, as most clients do
        resp = conn.getresponse()
        # A CONNECT answered 2xx is a tunnel: nothing after the headers is the response's body.
        tunnel = rq.method == "CONNECT" and 200 <= resp.status < 300
        body = b"" if tunnel else resp.read()
        return Response(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], body)
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return None
    finally:
        conn.close()
