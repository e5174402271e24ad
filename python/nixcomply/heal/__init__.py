"""Self-healing: runbooks, their executor, deterministic rules, flap suppression, windows."""
