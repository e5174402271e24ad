# services.nixcomply-server's options -> the content of /etc/nixcomply-server/server.json,
# which the server validates with pydantic (nixcomply.server.config.ServerConfig, unknown keys
# are errors). Kept apart so a test can evaluate exactly this mapping and validate its output.
{ lib }:
cfg:
lib.recursiveUpdate (
  {
    listen = {
      host = cfg.listen.address;
      inherit (cfg.listen) port;
    };
    database = {
      pool_size = cfg.database.poolSize;
    }
    // (
      if cfg.database.createLocally then
        # the local PostgreSQL's socket, peer authentication as the unit's user
        { url = "postgresql+psycopg:///nixcomply-server?host=/run/postgresql"; }
      else
        { }
    );
    # the key's path, not the key: the unit reads it as a credential; an administrator's
    # `nixcomply-server witness key` (as root) reads it here
    witness = {
      inherit (cfg.witness) name;
      key_file = cfg.witness.keyFile;
    };
    max_body_bytes = cfg.maxBodyBytes;
    migrate_on_start = cfg.migrateOnStart;
  }
) cfg.settings
