"""Prometheus metrics of the risk service, in the text exposition format (no client library needed).

Counters and histograms live in the process: with several worker processes each exposes its own
(scrape each, or sum in Prometheus). ``render`` writes them in the order Prometheus expects.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable

#: Latency buckets in seconds (upper bounds); +Inf is implied.
LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: Iterable[tuple[str, str]] = ()) -> str:
    items = [*labels, *extra]
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self._values: dict[Labels, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] += amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            lines += [f"{self.name}{_labels(k)} {v:g}" for k, v in sorted(self._values.items())]
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = defaultdict(float)
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sums[key] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for key, counts in sorted(self._counts.items()):
                running = 0
                for bound, n in zip([*self.buckets, math.inf], counts, strict=True):
                    running += n
                    le = "+Inf" if math.isinf(bound) else f"{bound:g}"
                    lines.append(f"{self.name}_bucket{_labels(key, [('le', le)])} {running}")
                lines.append(f"{self.name}_sum{_labels(key)} {self._sums[key]:.6f}")
                lines.append(f"{self.name}_count{_labels(key)} {running}")
        return lines


class Gauge:
    """Values computed at scrape time by ``collect`` (label dict -> value)."""

    def __init__(self, name: str, help_text: str, collect: Callable[[], dict[Labels, float]]) -> None:
        self.name, self.help, self.collect = name, help_text, collect

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        for key, v in sorted(self.collect().items()):
            lines.append(f"{self.name}{_labels(key)} {'NaN' if v is None or math.isnan(v) else f'{v:.6g}'}")
        return lines


class ServiceMetrics:
    """Every metric the service exposes."""

    def __init__(self, data_age: Callable[[], dict[Labels, float]]) -> None:
        self.requests = Counter("risk_service_requests_total", "HTTP requests by route, method and status code.")
        self.latency = Histogram("risk_service_request_duration_seconds", "Request latency by route and method.")
        self.decisions = Counter("risk_service_decisions_total", "Pre-trade decisions by outcome (replays too).")
        self.auth_failures = Counter("risk_service_auth_failures_total", "Refused requests by reason (401/403).")
        self.executions = Counter("risk_service_executions_total", "Fills received, by whether they were new.")
        self.stream_events = Counter("risk_service_stream_events_total", "Events published on /v1/stream by type.")
        self.data_age = Gauge(
            "risk_service_data_age_seconds",
            "Seconds since the newest row of each watched table was written (NaN: table missing or empty).",
            data_age,
        )

    def render(self) -> str:
        parts: list[str] = []
        for metric in (
            self.requests,
            self.latency,
            self.decisions,
            self.auth_failures,
            self.executions,
            self.stream_events,
            self.data_age,
        ):
            parts += metric.render()
        return "\n".join(parts) + "\n"
