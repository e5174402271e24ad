"""The host's runtime: the reconciler configuration, its SQLite state, the daemon loop,
sd_notify, the Prometheus textfile and the systemd (pystemd) adapter.

Only host code imports this package: the server and the uplink never do (a linter test).
"""
