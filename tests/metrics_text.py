"""Prometheus' text format read into ``{"name{label=value,...}": value}`` (labels sorted), the
shape the metrics tests compare (tests/unit/test_metrics.py, tests/e2e/test_failover.py)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample_values(text: str) -> dict[str, float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values
