"""Monitoring of the served model: feature drift and performance, as pure functions (no dagster)."""
