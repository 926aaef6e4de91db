"""Benchmarks of pal's speed: ``python -m benchmarks --help``.

Targets live here, never in timed tests; see ``docs/performance.md`` for the latest tables.
"""
