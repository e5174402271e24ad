"""Baselines: models of the YAML, loading with located errors, and rendering to NixOS modules."""
