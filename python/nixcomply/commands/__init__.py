"""Verb declarations, one module per area. Each module has ``register(subparsers)``, declares
arguments only, and imports the machinery it needs inside its handlers (fast start-up)."""
