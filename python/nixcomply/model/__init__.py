"""Wire types shared by the host, its uplink and the fleet server (no host runtime here)."""
