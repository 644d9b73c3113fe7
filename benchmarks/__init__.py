"""Throughput and latency benchmarks for kyphofhir (see ``benchmarks/README.md``).

The suite lives outside ``src/`` on purpose: it drives the real ``kyphofhir serve``
process over HTTP, so it measures what a deployment sees, not a test client.
"""
