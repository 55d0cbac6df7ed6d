"""Metrics, access logs, provider health and readiness (SPEC §7, §3 `/readyz`, §5 providers).

`Observability` (component.py) is the one object the gateway plugs in: a `Component` serving
`/metrics` and `/_admin/providers`, and a `Recorder` fed every finished request.
"""
