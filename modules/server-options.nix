# The options of the MSP's evidence server, `services.nixcomply-server`, declared apart from
# their implementation (modules/server.nix). They render into
# /etc/nixcomply-server/server.json, which the server validates with pydantic (unknown keys
# are errors); secrets never go there (LoadCredential).
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption types literalExpression;
  jsonFormat = pkgs.formats.json { };
in
{
  options.services.nixcomply-server = {
    enable = mkEnableOption "the nixcomply evidence server, to which the MSP's hosts upload their signed evidence and which witnesses their logs";

    package = lib.mkPackageOption pkgs "nixcomply-server" {
      extraDescription = "The flake's `nixosModules.default` sets this to the flake's own `nixcomply-server` package.";
    };

    listen = {
      address = mkOption {
        type = types.str;
        default = "127.0.0.1";
        description = "Address the server listens on; put a TLS-terminating proxy (nginx) in front of it.";
      };
      port = mkOption {
        type = types.port;
        default = 8443;
        description = "TCP port of the server (1024 or above: the unit has no capabilities).";
      };
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `listen.port` in the firewall (only when the server faces the hosts without a proxy).";
    };

    database = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run the database on this machine (`services.postgresql`, a database and role named
          `nixcomply-server`, reached over its unix socket with peer authentication). Set to
          `false` and give `database.urlFile` for an external PostgreSQL.
        '';
      };
      urlFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/nixcomply-server-database-url";
        description = ''
          File holding the SQLAlchemy URL of an external database, password included
          (`postgresql+psycopg://user:password@db.example/nixcomply`). Delivered with
          `LoadCredential`; it must not be in the Nix store.
        '';
      };
      poolSize = mkOption {
        type = types.ints.between 1 200;
        default = 10;
        description = "Connections the server keeps open to PostgreSQL.";
      };
    };

    witness = {
      name = mkOption {
        type = types.strMatching "[^[:space:]+]+";
        example = "evidence.msp.example/witness";
        description = "Name of the witness key (a schema-less URL naming this server), as `nixcomply-server witness keygen --name` was given.";
      };
      keyFile = mkOption {
        type = types.str;
        example = "/var/lib/nixcomply-server-keys/witness.key";
        description = ''
          The witness's Ed25519 private key (`nixcomply-server witness keygen`), which cosigns
          every checkpoint the server accepts. Delivered with `LoadCredential`; it must not be in
          the Nix store.
        '';
      };
    };

    maxBodyBytes = mkOption {
      type = types.ints.positive;
      default = 16 * 1024 * 1024;
      description = "Largest request body accepted (larger ones get 413); hosts batch their uploads below it.";
    };

    migrateOnStart = mkOption {
      type = types.bool;
      default = true;
      description = "Bring the database schema up to date (alembic) when the service starts.";
    };

    settings = mkOption {
      type = jsonFormat.type;
      default = { };
      example = literalExpression "{ clock_skew_seconds = 120; invite_ttl_hours = 4; }";
      description = "Further settings merged into /etc/nixcomply-server/server.json; unknown keys are errors.";
    };
  };
}
