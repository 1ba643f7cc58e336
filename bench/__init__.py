"""Switchyard's benchmark harness: ``make bench`` runs it, ``make bench-smoke`` proves it runs.

Modules: ``relay`` (the cheap OpenAI-compatible relay every target forwards to),
``floor`` (bare grpc.aio forwarders, the least our stack can cost), ``load`` (load worker
processes), ``procstat`` (CPU and RSS from /proc), ``targets`` (starting what is measured),
``harness`` (the phases), ``report`` (table, target checks, chart) and ``__main__``.
"""
