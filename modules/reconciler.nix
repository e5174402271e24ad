# The reconciler as a NixOS service: /etc/nixcomply/reconciler.json, the service (oneshot for
# the timer, Type=notify for daemon mode), the timer, and assertions. Options are declared in
# modules/reconciler-options.nix.
{ config, lib, pkgs, ... }:
let
  cfg = config.nixcomply.reconciler;
  jsonFormat = pkgs.formats.json { };
  daemon = cfg.mode == "daemon";
  storeDir = builtins.storeDir;
  defaultStateDir = "/var/lib/nixcomply";

  bundleCredential = "nixcomply-evidence-bundle-key";
  logCredential = "nixcomply-evidence-log-key";

  # One file the Python side validates (pydantic, extra keys forbidden).
  reconcilerConfig = import ./reconciler-config.nix { inherit lib; } cfg;

  configFile = jsonFormat.generate "nixcomply-reconciler.json" reconcilerConfig;

  # `settings` is merged over what the typed options render; a key both set would let the
  # freeform block silently win over the option (settings.dry_run over dryRun). Such keys,
  # as dotted paths: a key that the typed mapping has, unless both sides are attribute sets
  # (then their keys are compared in turn).
  typedConfig = import ./reconciler-config.nix { inherit lib; } (cfg // { settings = { }; });
  overridden =
    prefix: typed: settings:
    lib.concatMap (
      name:
      let
        path = prefix ++ [ name ];
      in
      if !(builtins.hasAttr name typed) then
        [ ]
      else if builtins.isAttrs typed.${name} && builtins.isAttrs settings.${name} then
        overridden path typed.${name} settings.${name}
      else
        [ (builtins.concatStringsSep "." path) ]
    ) (builtins.attrNames settings);
  settingsOverrides = overridden [ ] typedConfig cfg.settings;

  # the backup check reads restic or borg repositories when the site configures one
  backupKind = cfg.settings.checks.backup.kind or "timestamp";

  # What the option's type lets through and systemd (and the reconciler, which checks the
  # file each cycle) refuses: a template without an instance, a name over 255 characters.
  # Caught here, not by a host whose reconciler stops loading its configuration.
  unstartableUnits = builtins.filter (
    u: builtins.stringLength u > 255 || builtins.match ".*@[.][a-z]+" u != null
  ) cfg.healthGate.criticalUnits;

  inStore = path: path != null && lib.hasPrefix "${storeDir}/" path;
  keyAssertions = lib.concatMap (
    { option, value }:
    [
      {
        assertion = !(inStore value);
        message = "nixcomply.reconciler.${option} (${toString value}) is in the Nix store, which every user can read; give a path outside it, e.g. /run/keys/nixcomply-evidence.key";
      }
      {
        assertion = value == null || lib.hasPrefix "/" value;
        message = "nixcomply.reconciler.${option} must be an absolute path, got `${toString value}`.";
      }
      {
        assertion = cfg.dryRun || value != null;
        message = "nixcomply.reconciler.${option} is not set: every generation change is signed evidence (or set nixcomply.reconciler.dryRun = true).";
      }
    ]
  ) [
    { option = "signingKeyFile"; value = cfg.signingKeyFile; }
    { option = "logKeyFile"; value = cfg.logKeyFile; }
  ];
in
{
  imports = [ ./reconciler-options.nix ];

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.flake != null;
        message = "nixcomply.reconciler.enable is set but nixcomply.reconciler.flake is not: name the fleet flake to follow.";
      }
      {
        assertion = !(lib.hasInfix "\n" (cfg.hostAttribute));
        message = "nixcomply.reconciler.hostAttribute must be a single name.";
      }
      {
        assertion = unstartableUnits == [ ];
        message = "nixcomply.reconciler.healthGate.criticalUnits: ${builtins.concatStringsSep ", " unstartableUnits}: systemd cannot start a template without an instance (name@.service) or a unit name longer than 255 characters.";
      }
      {
        assertion = settingsOverrides == [ ];
        message = "nixcomply.reconciler.settings sets ${builtins.concatStringsSep ", " settingsOverrides}, which the typed nixcomply.reconciler options already set: set the option instead (see the option list in README.md).";
      }
    ]
    ++ keyAssertions;

    environment.etc."nixcomply/reconciler.json".source = configFile;
    environment.systemPackages = [ cfg.package ];

    systemd.services.nixcomply-reconcile = {
      description = "nixcomply: keep this host on the approved generation";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      wantedBy = lib.mkIf daemon [ "multi-user.target" ];
      # The service activates new generations itself; restarting it in the middle of its own
      # switch would cut that switch short (as comin and system.autoUpgrade do).
      restartIfChanged = false;
      stopIfChanged = false;
      restartTriggers = [ configFile ];

      path = [
        config.nix.package
        config.system.build.nixos-rebuild
        config.systemd.package # systemd-run, systemctl, systemd-cat
        pkgs.git
        # tools the runtime checks run
        pkgs.util-linux
        pkgs.cryptsetup
        pkgs.nftables
        pkgs.audit
        pkgs.kmod
        config.programs.ssh.package
      ]
      ++ lib.optional config.services.chrony.enable config.services.chrony.package
      ++ lib.optional config.networking.firewall.enable config.networking.firewall.package
      ++ lib.optional (backupKind == "restic") pkgs.restic
      ++ lib.optional (backupKind == "borg") pkgs.borgbackup;

      environment = {
        # nix keeps flake fetches under $XDG_CACHE_HOME; /root is not writable here
        XDG_CACHE_HOME = "/var/cache/nixcomply";
      };

      # Crash-loop protection: five failed starts within an hour stop further attempts until
      # an administrator looks (`systemctl reset-failed nixcomply-reconcile`).
      startLimitBurst = 5;
      startLimitIntervalSec = 3600;

      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} ${if daemon then "daemon" else "reconcile"} --config /etc/nixcomply/reconciler.json";
        LoadCredential =
          lib.optional (cfg.signingKeyFile != null) "${bundleCredential}:${cfg.signingKeyFile}"
          ++ lib.optional (cfg.logKeyFile != null) "${logCredential}:${cfg.logKeyFile}";
        StateDirectory = lib.mkIf (cfg.stateDir == defaultStateDir) "nixcomply";
        StateDirectoryMode = "0700";
        CacheDirectory = "nixcomply";
        UMask = "0077";

        # Hardening, as far as a root service that builds and switches systems allows.
        # Activation itself runs outside this unit: nixos-rebuild (and nixcomply's own revert)
        # start switch-to-configuration in a transient unit of PID 1 (systemd-run), so the
        # private mount namespace below never hides the mounts activation makes.
        NoNewPrivileges = true;
        PrivateTmp = true;
        ProtectHome = true;
        ProtectSystem = "strict";
        ReadWritePaths = [
          cfg.stateDir
          # nixos-rebuild switch points the system profile at the new generation here
          "/nix/var/nix/profiles"
          "/nix/var/nix/gcroots"
        ]
        ++ lib.optional cfg.metrics.enable (builtins.dirOf cfg.metrics.path);
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        RestrictSUIDSGID = true; # setuid wrappers are made by suid-sgid-wrappers.service, not here
        RestrictRealtime = true;
        LockPersonality = true;
        # The host name is set by activation, which runs in its own transient unit.
        ProtectHostname = true;
        # D-Bus and the nix daemon (unix), flake fetches and liveness probes (inet), and the
        # kernel's netlink interfaces that nft, auditctl and cryptsetup use.
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
          "AF_NETLINK"
        ];
        # Nothing here makes namespaces: builds run in the nix daemon, activation in PID 1's
        # transient unit.
        RestrictNamespaces = true;
        # What a service needs (no mount, module loading, swap, reboot, clock or raw I/O
        # calls); a call outside it fails with EPERM rather than killing the cycle, so a
        # liveness command that needs more fails its check, visibly.
        SystemCallFilter = [ "@system-service" ];
        SystemCallErrorNumber = "EPERM";
        SystemCallArchitectures = "native";
        # Defence in depth: a process of this unit that gives up root (a liveness command run
        # as another user) sees only its own processes in /proc; root keeps CAP_SYS_PTRACE,
        # so the checks still see every process.
        ProtectProc = "invisible";
        # Not set, on purpose:
        # - PrivateDevices: the encryption check reads block devices (lsblk, cryptsetup status).
        # - PrivateNetwork / IPAddressDeny: the flake is fetched over the network.
        # - CapabilityBoundingSet: auditctl (CAP_AUDIT_CONTROL), nft (CAP_NET_ADMIN) and the
        #   profile switch (file ownership) need root's capabilities.
        # - MemoryDenyWriteExecute: Python and Nix are fine, but liveness commands may not be.
        # - ProcSubset = "pid": the checks read /proc/sys (sysctl, core_pattern), /proc/modules
        #   and /proc/cmdline, which it would hide.
      }
      // (
        if daemon then
          {
            Type = "notify";
            NotifyAccess = "main";
            WatchdogSec = cfg.daemon.watchdogSec;
            Restart = "on-failure";
            RestartSec = 30;
            # a cycle in progress is allowed to finish (its activation is never cut in half)
            TimeoutStopSec = "15min";
          }
        else
          {
            Type = "oneshot";
            # a build of a new generation can take long; the timer does not start a second run
            TimeoutStartSec = "3h";
          }
      );
    };

    systemd.timers.nixcomply-reconcile = lib.mkIf (!daemon) {
      description = "nixcomply: reconcile on a schedule";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.schedule.onCalendar;
        RandomizedDelaySec = cfg.schedule.randomizedDelaySec;
        Persistent = cfg.schedule.persistent;
      };
    };

    systemd.tmpfiles.settings."10-nixcomply" = lib.mkMerge [
      (lib.mkIf cfg.metrics.enable {
        ${builtins.dirOf cfg.metrics.path}.d = {
          mode = "0755";
          user = "root";
          group = "root";
        };
      })
      # StateDirectory only manages /var/lib/nixcomply; another stateDir must exist before
      # the unit starts, or ProtectSystem=strict fails on its ReadWritePaths entry.
      (lib.mkIf (cfg.stateDir != defaultStateDir) {
        ${cfg.stateDir}.d = {
          mode = "0700";
          user = "root";
          group = "root";
        };
      })
    ];
  };
}
