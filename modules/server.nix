# The MSP's evidence server as a NixOS service: /etc/nixcomply-server/server.json, a local
# PostgreSQL (or an external one), keys through LoadCredential, and a hardened unit.
# Options are declared in modules/server-options.nix.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.nixcomply-server;
  jsonFormat = pkgs.formats.json { };
  name = "nixcomply-server";
  witnessCredential = "nixcomply-witness-key";
  databaseCredential = "nixcomply-server-database-url";
  inStore = path: path != null && lib.hasPrefix "${builtins.storeDir}/" path;

  serverConfig = import ./server-config.nix { inherit lib; } cfg;
  configFile = jsonFormat.generate "nixcomply-server.json" serverConfig;
in
{
  imports = [ ./server-options.nix ];

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = !(inStore cfg.witness.keyFile);
        message = "services.nixcomply-server.witness.keyFile (${cfg.witness.keyFile}) is in the Nix store, which every user can read; give a path outside it.";
      }
      {
        assertion = !(inStore cfg.database.urlFile);
        message = "services.nixcomply-server.database.urlFile is in the Nix store, which every user can read; give a path outside it.";
      }
      {
        assertion = cfg.database.createLocally != (cfg.database.urlFile != null);
        message = "services.nixcomply-server: set either database.createLocally (a local PostgreSQL) or database.urlFile (an external one), not both or neither.";
      }
      {
        assertion = cfg.listen.port >= 1024;
        message = "services.nixcomply-server.listen.port must be 1024 or above (the unit has no capabilities); put a proxy on 443.";
      }
    ];

    environment.etc."nixcomply-server/server.json".source = configFile;
    # the operator's verbs (site, host invite|list|revoke, status) read the same file
    environment.systemPackages = [ cfg.package ];

    services.postgresql = lib.mkIf cfg.database.createLocally {
      enable = true;
      ensureDatabases = [ name ];
      ensureUsers = [
        {
          inherit name;
          ensureDBOwnership = true;
        }
      ];
    };

    # A static user, so operators reach the local database as it (peer authentication):
    # `sudo -u nixcomply-server nixcomply-server host invite ...`.
    users.users.${name} = {
      isSystemUser = true;
      group = name;
      description = "nixcomply evidence server";
    };
    users.groups.${name} = { };

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.listen.port ];

    systemd.services.nixcomply-server = {
      description = "nixcomply evidence server";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ] ++ lib.optional cfg.database.createLocally "postgresql.target";
      requires = lib.optional cfg.database.createLocally "postgresql.target";
      restartTriggers = [ configFile ];

      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} serve --config /etc/nixcomply-server/server.json";
        # The database role is the unit's user name: peer authentication over the socket.
        User = name;
        Group = name;
        LoadCredential = [
          "${witnessCredential}:${cfg.witness.keyFile}"
        ]
        ++ lib.optional (cfg.database.urlFile != null) "${databaseCredential}:${cfg.database.urlFile}";
        Restart = "on-failure";
        RestartSec = 5;
        UMask = "0077";

        # Hardening: the server only talks HTTP and to PostgreSQL.
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        NoNewPrivileges = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictAddressFamilies = [
          "AF_UNIX" # PostgreSQL's socket
          "AF_INET"
          "AF_INET6"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "~@resources"
        ];
        # Not set, on purpose:
        # - IPAddressAllow/Deny: hosts reach the server from the clinics' networks, which only
        #   the MSP knows; restrict them in the firewall or the proxy in front.
      };
    };
  };
}
