"""The host's side of the fleet: enrollment, the outbox (the unacknowledged suffix of the
host's own evidence log) and uploads to the MSP's server. Never imports ``server/``."""
