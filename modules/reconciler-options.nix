# The options of nixcomply's reconciler service, declared apart from their implementation
# (modules/reconciler.nix). Everything here is rendered into /etc/nixcomply/reconciler.json,
# which the reconciler validates with pydantic (unknown keys are errors).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption types literalExpression;
  jsonFormat = pkgs.formats.json { };

  time = types.strMatching "([01][0-9]|2[0-3]):[0-5][0-9]";
  unit = types.strMatching "[A-Za-z0-9:_.@-]+\\.(service|socket|target|timer|mount|path)";
  weekday = types.enum [ "mon" "tue" "wed" "thu" "fri" "sat" "sun" ];
in
{
  options.nixcomply.reconciler = {
    enable = mkEnableOption "the nixcomply reconciler, which keeps this host on the approved flake revision (test, health gate, switch or revert) and writes signed evidence";

    package = lib.mkPackageOption pkgs "nixcomply" {
      extraDescription = "The flake's `nixosModules.default` sets this to the flake's own package.";
    };

    flake = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "git+https://git.example/clinic-fleet?ref=main";
      description = "Flake reference of the fleet configuration the host follows.";
    };

    hostAttribute = mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = literalExpression "config.networking.hostName";
      description = "Name of this host under the flake's `nixosConfigurations`.";
    };

    approvedRevision = mkOption {
      type = types.nullOr (types.strMatching "[0-9a-f]{40}");
      default = null;
      example = "4c6abcaa2657f6a2505afabb4946e043995addc6";
      description = "If set, only this git revision of the flake is applied; any other is refused and reported.";
    };

    mode = mkOption {
      type = types.enum [ "timer" "daemon" ];
      default = "timer";
      description = ''
        `timer`: a oneshot service started by a systemd timer (see `schedule`).
        `daemon`: a long-running `Type=notify` service that reconciles every `daemon.pollInterval`
        seconds and pets systemd's watchdog.
      '';
    };

    schedule = {
      onCalendar = mkOption {
        type = types.str;
        default = "*:0/15";
        description = "When the timer starts a reconcile run (systemd.time(7) calendar expression).";
      };
      randomizedDelaySec = mkOption {
        type = types.str;
        default = "5m";
        description = "Random delay added to each timer run, so a fleet does not reconcile at once.";
      };
      persistent = mkOption {
        type = types.bool;
        default = true;
        description = "Run a missed timer run at boot.";
      };
    };

    daemon = {
      pollInterval = mkOption {
        type = types.ints.positive;
        default = 900;
        description = "Seconds between reconcile cycles in daemon mode.";
      };
      jitter = mkOption {
        type = types.ints.unsigned;
        default = 60;
        description = "Up to this many seconds are added at random to each wait in daemon mode.";
      };
      watchdogSec = mkOption {
        type = types.ints.positive;
        default = 300;
        description = "systemd's `WatchdogSec` in daemon mode; a cycle longer than `cycleTimeout` stops the petting.";
      };
      cycleTimeout = mkOption {
        type = types.ints.positive;
        default = 7200;
        description = "Seconds a cycle may take (builds included) before the watchdog is left to expire.";
      };
    };

    maintenanceWindow = mkOption {
      type = types.nullOr (
        types.submodule {
          options = {
            start = mkOption {
              type = time;
              example = "22:00";
              description = "Local time the window opens (HH:MM).";
            };
            end = mkOption {
              type = time;
              example = "02:00";
              description = "Local time the window closes (HH:MM); before `start` means the next day.";
            };
            days = mkOption {
              type = types.nonEmptyListOf weekday;
              default = [ "mon" "tue" "wed" "thu" "fri" "sat" "sun" ];
              description = "Days on which the window opens.";
            };
          };
        }
      );
      default = null;
      example = literalExpression ''{ start = "22:00"; end = "02:00"; days = [ "sat" "sun" ]; }'';
      description = "When generation switches and disruptive runbooks may run; `null` means any time.";
    };

    healthGate = {
      criticalUnits = mkOption {
        type = types.listOf unit;
        default = [ "sshd.service" ];
        example = [ "sshd.service" "postgresql.service" "nginx.service" ];
        description = "Units that must be active after `nixos-rebuild test` for the switch to go ahead.";
      };
      liveness = mkOption {
        type = types.listOf (
          types.submodule {
            options = {
              name = mkOption {
                type = types.strMatching "[A-Za-z0-9_.-]+";
                description = "Name of the check in reports and evidence.";
              };
              argv = mkOption {
                type = types.nonEmptyListOf types.str;
                example = [ "curl" "-fsS" "http://127.0.0.1:8080/health" ];
                description = "Command (no shell) that must exit 0.";
              };
              timeout = mkOption {
                type = types.ints.positive;
                default = 10;
                description = "Seconds the command may take.";
              };
            };
          }
        );
        default = [ ];
        description = "Commands that must succeed after `nixos-rebuild test`.";
      };
      timeout = mkOption {
        type = types.ints.positive;
        default = 120;
        description = "Seconds the whole health gate may take.";
      };
    };

    signingKeyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/keys/nixcomply-evidence-bundle.key";
      description = ''
        Ed25519 private key that signs evidence bundles (`nixcomply evidence keygen --role bundle`).
        Delivered to the service with `LoadCredential`; it must not be in the Nix store. Use a
        string, not a Nix path (a path would be copied into the store).
      '';
    };

    logKeyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/keys/nixcomply-evidence-log.key";
      description = "Ed25519 private key that signs the evidence log's checkpoints (`--role log`); as `signingKeyFile`.";
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/nixcomply";
      description = "State database, evidence store and log.";
    };

    dryRun = mkOption {
      type = types.bool;
      default = false;
      description = "Build and decide but never activate, switch or heal; evidence keys are then not required.";
    };

    metrics = {
      enable = mkEnableOption "a Prometheus textfile for node-exporter's textfile collector after every run";
      path = mkOption {
        type = types.str;
        default = "/var/lib/prometheus-node-exporter-text-files/nixcomply.prom";
        description = "Where the metrics textfile is written (atomically).";
      };
    };

    upload = {
      enable = mkEnableOption "uploads of this host's evidence to the MSP's evidence server (`nixcomply-server`), after every reconcile run and from their own timer";
      server = mkOption {
        type = types.nullOr (types.strMatching "https?://[^[:space:]]+");
        default = null;
        example = "https://evidence.msp.example";
        description = "URL of the evidence server; the host refuses to upload anywhere else.";
      };
      tokenFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/nixcomply-enroll-token";
        description = ''
          A single-use enrollment token (`nixcomply-server host invite`). When set,
          `nixcomply-enroll.service` enrolls the host at boot unless it is enrolled already.
          Delivered with `LoadCredential`; it must not be in the Nix store.
        '';
      };
      schedule = {
        onCalendar = mkOption {
          type = types.str;
          default = "*:0/5";
          description = "When the upload timer retries between reconcile runs (its backoff decides whether an attempt is due).";
        };
        randomizedDelaySec = mkOption {
          type = types.str;
          default = "1m";
          description = "Random delay added to each upload timer run.";
        };
      };
    };

    settings = mkOption {
      type = jsonFormat.type;
      default = { };
      example = literalExpression ''{ checks.backup = { kind = "restic"; repository = "/mnt/backup/restic"; password_file = "/var/lib/nixcomply-keys/restic"; }; }'';
      description = ''
        Further reconciler settings merged into /etc/nixcomply/reconciler.json (for example the
        `checks` and `heal` blocks). The reconciler rejects unknown keys, naming the field, and
        a key that one of the options above already sets is an evaluation error: set the option.
      '';
    };
  };
}
