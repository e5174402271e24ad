"""The reconciler: observe the host, decide against the approved flake, test, gate, switch or revert."""
