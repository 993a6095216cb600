"""Envoy's admin API: readiness, stats (parsed), config_dump, clusters, listeners, log level."""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote, urlsplit

from prometheus_client.parser import text_string_to_metric_families


class Admin:
    def __init__(self, address: str):
        # --admin-address-path writes "127.0.0.1:PORT"
        address = address if "://" in address else "http://" + address
        parts = urlsplit(address)
        self.host, self.port = parts.hostname, parts.port
        self.url = f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, timeout: float = 10) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def get(self, path: str) -> bytes:
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"admin {path}: HTTP {status}: {body[:200]!r}")
        return body

    def ready(self) -> bool:
        try:
            status, body = self.request("GET", "/ready", timeout=2)
        except OSError:
            return False
        return status == 200 and body.strip() == b"LIVE"

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges by their admin /stats names (those matching `filter_regex`); text
        readouts (e.g. an SDS secret's `version_text`) are not numbers and are left out."""
        query = "/stats?format=json" + (f"&filter={quote(filter_regex)}" if filter_regex else "")
        doc = json.loads(self.get(query))
        return {s["name"]: s["value"] for s in doc.get("stats", [])
                if isinstance(s.get("value"), int) and not isinstance(s["value"], bool)}

    def prometheus(self) -> dict[str, list[tuple[dict, float]]]:
        """/stats/prometheus parsed: metric sample name -> [(labels, value)]."""
        text = self.get("/stats/prometheus").decode()
        out: dict[str, list[tuple[dict, float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return out

    def config_dump(self) -> dict:
        return json.loads(self.get("/config_dump"))

    def clusters(self) -> dict:
        return json.loads(self.get("/clusters?format=json"))

    def listener_address(self, name: str) -> tuple[str, int]:
        doc = json.loads(self.get("/listeners?format=json"))
        for listener in doc.get("listener_statuses", []):
            if listener.get("name") == name:
                sa = listener["local_address"]["socket_address"]
                return sa["address"], int(sa["port_value"])
        raise RuntimeError(f"listener {name!r} not found")

    def set_log_level(self, level: str, component: str | None = None) -> str:
        """Set one component's log level (or all of them); returns Envoy's list of levels."""
        path = f"/logging?{component}={level}" if component else f"/logging?level={level}"
        status, body = self.request("POST", path)
        if status != 200:
            raise RuntimeError(f"admin {path}: HTTP {status}: {body[:200]!r}")
        return body.decode()
