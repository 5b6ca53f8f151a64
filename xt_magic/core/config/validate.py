"""Validation of the merged config (placeholder until the schema lands)."""
from __future__ import annotations


def check(data, origins, layers):
    return []
