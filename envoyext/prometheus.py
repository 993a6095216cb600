"""Envoy stat names as /stats/prometheus prints them, so the emulators can be held to the scrape.

Envoy turns parts of a stat name into tags (its default extractors plus `stats_config.stats_tags`):
a tag's regex has one or two capture groups; the first is cut out of the name, the second (or
the first) is the tag's value. What is left, with `envoy_` in front and every character outside
[a-zA-Z0-9_] as `_`, is the metric name; names in a custom namespace (Wasm's `wasmcustom.`)
lose the namespace and get no prefix. Histograms are summarised here by their `_count` only:
Envoy's sums and bucket edges are approximate (circllhist), counts are exact.

A series is keyed `(sample name, frozenset of (label, value))`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

Series = dict[tuple[str, frozenset], float]

CUSTOM_NAMESPACES = ("wasmcustom.",)

# The subset of Envoy's default tag extractors (source/common/config/well_known_names.cc) that a
# filter's own stats can meet; each cuts its first group and takes the second as the value.
DEFAULT_TAGS = [
    ("envoy_http_conn_manager_prefix", re.compile(r"^http\.((.*?)\.)")),
    ("envoy_cluster_name", re.compile(r"^cluster\.((.*?)\.)")),
]


def _custom(stats_tags: Iterable[dict]) -> list[tuple[str, re.Pattern | None, str | None]]:
    out = []
    for t in stats_tags or ():
        name = t["tag_name"]
        if "fixed_value" in t:
            out.append((name, None, t["fixed_value"]))
        else:
            out.append((name, re.compile(t["regex"]), None))
    return out


def tagged(stat: str, stats_tags: Iterable[dict] = ()) -> tuple[str, dict[str, str]]:
    """(metric name as printed, labels) for an admin /stats name."""
    custom_ns = next((ns for ns in CUSTOM_NAMESPACES if stat.startswith(ns)), None)
    labels: dict[str, str] = {}
    cut: list[tuple[int, int]] = []
    extractors = [(n, rx, None) for n, rx in DEFAULT_TAGS] if custom_ns is None else []
    extractors += _custom(stats_tags)
    for name, rx, fixed in extractors:
        if rx is None:
            labels[name] = fixed
            continue
        m = rx.search(stat)
        if not m or name in labels:
            continue
        value_group = 2 if m.re.groups >= 2 else 1
        labels[name] = m.group(value_group)
        cut.append(m.span(1))
    kept = "".join(c for i, c in enumerate(stat) if not any(a <= i < b for a, b in cut))
    kept = re.sub(r"\.{2,}", ".", kept).strip(".")  # what a cut leaves of its separators
    if custom_ns is not None:
        return _sanitize(kept[len(custom_ns):]), labels
    return "envoy_" + _sanitize(kept), labels


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def series(counters: dict[str, float], gauges: dict[str, float] | None = None,
           histograms: dict[str, list[float]] | None = None, stats_tags: Iterable[dict] = ()) -> Series:
    """The scrape Envoy would print for these counters, gauges and histograms (counters get
    Prometheus' `_total` suffix unless they have it, as Envoy prints them)."""
    out: Series = {}
    for suffix, values in (("_total", counters), ("", gauges or {})):
        for stat, value in values.items():
            name, labels = tagged(stat, stats_tags)
            if not name.endswith(suffix):
                name += suffix
            key = (name, frozenset(labels.items()))
            out[key] = out.get(key, 0) + value
    for stat, values in (histograms or {}).items():
        name, labels = tagged(stat, stats_tags)
        key = (name + "_count", frozenset(labels.items()))
        out[key] = out.get(key, 0) + len(values)
    return out


def parse(families: dict[str, list[tuple[dict, float]]]) -> Series:
    """Admin.prometheus() output as series (histogram buckets and sums left out, see above)."""
    out: Series = {}
    for sample, items in families.items():
        if sample.endswith(("_bucket", "_sum")):
            continue
        for labels, value in items:
            out[(sample, frozenset(labels.items()))] = value
    return out


def delta(before: Series, after: Series) -> Series:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def matching(s: Series, sample: str, labels: dict[str, str]) -> float:
    """Sum of the series named `sample` whose labels include `labels`."""
    want = {(k, str(v)) for k, v in labels.items()}
    return sum(v for (name, ls), v in s.items() if name == sample and want <= ls)
