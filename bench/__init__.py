"""Benchmarks of django-paubox: ``python -m bench`` (see docs/performance.md)."""
