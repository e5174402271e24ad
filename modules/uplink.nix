# The host's uplink to the MSP's evidence server (nixcomply.reconciler.upload, declared in
# modules/reconciler-options.nix): an upload service and timer, and with upload.tokenFile an
# enroll-at-boot oneshot. The reconcile run itself also uploads at its end.
{ config, lib, ... }:
let
  cfg = config.nixcomply.reconciler;
  inStore = path: path != null && lib.hasPrefix "${builtins.storeDir}/" path;
  tokenCredential = "nixcomply-enroll-token";
  uplinkUnit = {
    # The uplink only reads the evidence store and talks HTTP; its own hardening on top of
    # the reconciler's (it needs none of root's tools).
    ProtectSystem = "strict";
    ReadWritePaths = [ cfg.stateDir ];
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectHome = true;
    NoNewPrivileges = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" ];
    UMask = "0077";
  };
in
{
  config = lib.mkIf (cfg.enable && cfg.upload.enable) {
    assertions = [
      {
        assertion = cfg.upload.server != null;
        message = "nixcomply.reconciler.upload.enable is set but nixcomply.reconciler.upload.server is not: name the evidence server.";
      }
      {
        assertion = !(inStore cfg.upload.tokenFile);
        message = "nixcomply.reconciler.upload.tokenFile is in the Nix store, which every user can read; give a path outside it.";
      }
    ];

    # Uploads between reconcile runs: the uplink's own backoff decides whether an attempt is
    # due, so a dead server never delays a reconcile and a week offline ends in one catch-up.
    systemd.services.nixcomply-upload = {
      description = "nixcomply: upload evidence to the MSP's server";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "nixcomply-enroll.service" ];
      serviceConfig = uplinkUnit // {
        Type = "oneshot";
        ExecStart = "${lib.getExe cfg.package} upload --config /etc/nixcomply/reconciler.json";
        # a failed attempt (exit 1) is already scheduled for a retry with backoff; the unit
        # shows failed until an attempt succeeds, so monitoring sees a server that is down
        TimeoutStartSec = "30min";
      };
    };
    systemd.timers.nixcomply-upload = {
      description = "nixcomply: upload evidence on a schedule";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.upload.schedule.onCalendar;
        RandomizedDelaySec = cfg.upload.schedule.randomizedDelaySec;
      };
    };
    systemd.services.nixcomply-enroll = lib.mkIf (cfg.upload.tokenFile != null) {
      description = "nixcomply: enroll with the MSP's evidence server";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = uplinkUnit // {
        Type = "oneshot";
        RemainAfterExit = true;
        LoadCredential = [ "${tokenCredential}:${cfg.upload.tokenFile}" ];
        ExecStart = "${lib.getExe cfg.package} enroll --if-needed --config /etc/nixcomply/reconciler.json";
        Restart = "on-failure";
        RestartSec = 60;
      };
    };

  };
}
