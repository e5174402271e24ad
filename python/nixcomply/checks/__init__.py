"""Runtime drift checks: one module per check, a registry, and the catalog of check names."""
