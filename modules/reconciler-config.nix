# nixcomply.reconciler's options -> the content of /etc/nixcomply/reconciler.json, which the
# reconciler validates with pydantic (nixcomply.reconcile.config.ReconcilerConfig, unknown keys are
# errors). Kept apart so a test can evaluate exactly this mapping and validate its output.
{ lib }:
cfg:
lib.recursiveUpdate {
  flake = cfg.flake;
  host = cfg.hostAttribute;
  approved_revision = cfg.approvedRevision;
  state_dir = cfg.stateDir;
  dry_run = cfg.dryRun;
  mode = cfg.mode;
  poll_interval_seconds = cfg.daemon.pollInterval;
  jitter_seconds = cfg.daemon.jitter;
  cycle_timeout_seconds = cfg.daemon.cycleTimeout;
  maintenance_window = cfg.maintenanceWindow;
  health_gate = {
    critical_units = cfg.healthGate.criticalUnits;
    liveness = cfg.healthGate.liveness;
    timeout = cfg.healthGate.timeout;
  };
  # Under systemd the keys arrive as credentials ($CREDENTIALS_DIRECTORY); the paths let an
  # administrator run `nixcomply reconcile` by hand as root.
  evidence = {
    signing_key = cfg.signingKeyFile;
    log_key = cfg.logKeyFile;
  };
  metrics = {
    inherit (cfg.metrics) enable path;
  };
  upload = {
    server = if cfg.upload.enable then cfg.upload.server else null;
  };
} cfg.settings
