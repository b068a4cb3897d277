"""A tiny Prometheus registry: gauges, counters and histograms with labels, rendered in the text
exposition format 0.0.4 (`# HELP`, `# TYPE`, escaped label values).

No runtime dependency on prometheus_client. metrics.py builds the controller's `njcm_*` set on
a `Registry`; the admin API (adapters/admin/server.py) serves its `render()` on GET /metrics
with CONTENT_TYPE. Thread-safe (one lock per registry) so executor threads may record too.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip

LabelKey = tuple[str, ...]


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


class _Metric:
    kind = "untyped"

    def __init__(
        self, name: str, help_text: str, labelnames: Sequence[str], lock: threading.Lock
    ) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for ln in labelnames:
            if not _LABEL_RE.match(ln) or ln.startswith("__") or ln == "le":
                raise ValueError(f"invalid label name {ln!r} for metric {name}")
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = lock

    def _key(self, labels: dict[str, str]) -> LabelKey:
        if set(labels) != set(self.labelnames):
            raise ValueError(
                f"metric {self.name} takes labels {list(self.labelnames)}, got {sorted(labels)}"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def _header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def _children(self) -> dict[LabelKey, object]:
        raise NotImplementedError

    def remove(self, **labels: str) -> None:
        """Drop one labelled series (no error when absent)."""
        key = self._key(labels)
        with self._lock:
            self._children().pop(key, None)

    def remove_matching(self, **labels: str) -> None:
        """Drop every series whose labels include all of `labels` (e.g. name="a.test")."""
        idx = {self.labelnames.index(k): v for k, v in labels.items() if k in self.labelnames}
        if len(idx) != len(labels):
            raise ValueError(f"metric {self.name} has no label among {sorted(labels)}")
        with self._lock:
            children = self._children()
            for key in [k for k in children if all(k[i] == v for i, v in idx.items())]:
                del children[key]

    def render(self) -> list[str]:
        raise NotImplementedError


class Gauge(_Metric):
    kind = "gauge"

    def __init__(
        self, name: str, help_text: str, labelnames: Sequence[str], lock: threading.Lock
    ) -> None:
        super().__init__(name, help_text, labelnames, lock)
        self._values: dict[LabelKey, float] = {} if labelnames else {(): 0.0}

    def _children(self) -> dict[LabelKey, object]:
        return self._values  # type: ignore[return-value]

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def get(self, **labels: str) -> float | None:
        with self._lock:
            return self._values.get(self._key(labels))

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        lines = self._header()
        lines += [f"{self.name}{_labels_text(self.labelnames, k)} {_fmt(v)}" for k, v in items]
        return lines


class Counter(Gauge):
    """A monotonically increasing value; by convention its name ends in `_total`."""

    kind = "counter"

    def set(self, value: float, **labels: str) -> None:
        raise TypeError(f"counter {self.name} cannot be set, only increased")

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name} cannot decrease (got {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class _HistData:
    __slots__ = ("counts", "sum")

    def __init__(self, nbuckets: int) -> None:
        self.counts = [0] * nbuckets  # per bucket, not cumulative
        self.sum = 0.0


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str],
        lock: threading.Lock,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames, lock)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"histogram {name} needs distinct finite buckets")
        self.buckets = (*bounds, math.inf)
        self._data: dict[LabelKey, _HistData] = {}
        if not labelnames:
            self._data[()] = _HistData(len(self.buckets))

    def _children(self) -> dict[LabelKey, object]:
        return self._data  # type: ignore[return-value]

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            data = self._data.get(key)
            if data is None:
                data = self._data[key] = _HistData(len(self.buckets))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    data.counts[i] += 1
                    break
            data.sum += value

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(d.counts), d.sum)) for k, d in self._data.items())
        lines = self._header()
        names = (*self.labelnames, "le")
        for key, (counts, total) in items:
            cumulative = 0
            for bound, count in zip(self.buckets, counts, strict=True):
                cumulative += count
                lbl = _labels_text(names, (*key, _fmt(bound)))
                lines.append(f"{self.name}_bucket{lbl} {_fmt(cumulative)}")
            lbl = _labels_text(self.labelnames, key)
            lines.append(f"{self.name}_sum{lbl} {_fmt(total)}")
            lines.append(f"{self.name}_count{lbl} {_fmt(cumulative)}")
        return lines


class Registry:
    """Named metrics in registration order; `render()` gives the 0.0.4 text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics[metric.name] = metric

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        g = Gauge(name, help_text, labelnames, self._lock)
        self._add(g)
        return g

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        c = Counter(name, help_text, labelnames, self._lock)
        self._add(c)
        return c

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        h = Histogram(name, help_text, labelnames, self._lock, buckets=buckets)
        self._add(h)
        return h

    def render(self) -> str:
        lines: list[str] = []
        for metric in list(self._metrics.values()):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
