# The fleet: an evidence server (services.nixcomply-server, local PostgreSQL) and two hosts in
# two sites. Each host enrolls with a token, reconciles to revision B, and its evidence
# arrives on the server cosigned; the server is restarted in the middle of an upload and
# nothing is lost. Its twin that runs without VMs: tests/test_fleet_scenario.py.
{ ... }:
let
  scenario = import ./common/scenario.nix {
    revisions.revB = {
      revision = "B";
      appHealthy = true;
    };
  };
  # Both hosts follow the fleet flake's `machine` configuration; the test enrolls each by
  # hand, under its node name, with a token it asks the server for.
  host = {
    imports = [ scenario.node ];
    nixcomply.reconciler.upload = {
      enable = true;
      server = "http://server:8443";
    };
  };
in
{
  name = "nixcomply-fleet-upload";

  nodes.server =
    { self, lib, ... }:
    {
      imports = [ self.nixosModules.default ];
      services.nixcomply-server = {
        enable = true;
        listen.address = "0.0.0.0";
        openFirewall = true;
        witness = {
          name = "evidence.msp.test/witness";
          keyFile = "/var/lib/nixcomply-server-keys/witness.key";
        };
      };
      # the witness key is made by the test script before the first start
      systemd.services.nixcomply-server.wantedBy = lib.mkForce [ ];
      virtualisation.memorySize = 2048;
    };
  nodes.clinic1 = host;
  nodes.clinic2 = host;

  testScript = ''
    import json

    def operator(command):
        """A server verb as the service's user (peer authentication to the local database)."""
        return server.succeed(f"runuser -u nixcomply-server -- nixcomply-server {command}")

    def prepare(node):
        node.wait_for_unit("multi-user.target")
        node.succeed(
            "mkdir -p /var/lib/fleet && git -C /var/lib/fleet init -q -b main",
            "mkdir -p /var/lib/nixcomply-keys /var/lib/nixcomply && chmod 700 /var/lib/nixcomply-keys",
            f"nixcomply evidence keygen --role bundle --name {node.name}-evidence "
            "--out /var/lib/nixcomply-keys/bundle.key --keyring /var/lib/nixcomply/keyring.json",
            "nixcomply evidence keygen --role log --name nixcomply/machine "
            "--out /var/lib/nixcomply-keys/log.key --keyring /var/lib/nixcomply/keyring.json",
            # the operator's copy of the keyring, made when the keys are (verify pins it)
            "cp /var/lib/nixcomply/keyring.json /var/lib/nixcomply-keys/keyring.json",
            "cp -rT /etc/fleet/revB /var/lib/fleet && chmod -R u+w /var/lib/fleet",
            "git -C /var/lib/fleet add -A && "
            "git -C /var/lib/fleet -c user.name=ci -c user.email=ci@nixcomply.test commit -qm revB",
        )

    def local_size(node):
        return json.loads(node.succeed("nixcomply evidence verify --json --keyring /var/lib/nixcomply-keys/keyring.json /var/lib/nixcomply"))["entries"]

    def accepted(site, name):
        hosts = json.loads(operator("host list --json"))
        return next(h["accepted_size"] for h in hosts if (h["site"], h["hostname"]) == (site, name))

    start_all()
    server.wait_for_unit("postgresql.target")
    server.succeed(
        "install -d -m 700 /var/lib/nixcomply-server-keys",
        "nixcomply-server witness keygen --name evidence.msp.test/witness "
        "--out /var/lib/nixcomply-server-keys/witness.key",
        "systemctl start nixcomply-server.service",
    )
    server.wait_for_open_port(8443)
    witness = server.succeed("nixcomply-server witness key").strip()
    operator("site add north")
    operator("site add south")

    for node, site in ((clinic1, "north"), (clinic2, "south")):
        with subtest(f"{node.name}: enroll, reconcile, the evidence arrives"):
            prepare(node)
            invite = json.loads(operator(f"host invite --site {site} --host {node.name} --json"))
            out = node.succeed(f"nixcomply enroll --hostname {node.name} --token {invite['token']}")
            assert f"enrolled as {site}/{node.name}" in out, out
            node.succeed("systemctl start nixcomply-reconcile.service")
            node.succeed("nixcomply upload")
            size = local_size(node)
            assert size >= 1, size
            assert accepted(site, node.name) == size, f"{node.name}: server holds {accepted(site, node.name)}, host {size}"
            node.succeed(f"nixcomply evidence verify /var/lib/nixcomply --keyring /var/lib/nixcomply-keys/keyring.json --witness '{witness}'")
            node.fail(f"nixcomply enroll --hostname {node.name} --token {invite['token']}")

    with subtest("no incidents, every accepted checkpoint cosigned"):
        status = json.loads(operator("status --json"))
        assert status["incidents"] == [], status["incidents"]
        assert status["totals"]["checkpoints"] >= 2, status

    with subtest("the server restarted in the middle of an upload loses nothing"):
        for _ in range(6):
            clinic1.succeed("systemctl start nixcomply-reconcile.service")
        clinic1.succeed("nixcomply upload --json > /tmp/upload.json 2>&1 & echo started")
        server.succeed("systemctl restart nixcomply-server.service")
        server.wait_for_open_port(8443)
        clinic1.wait_until_succeeds("nixcomply upload --force", timeout=120)
        assert accepted("north", "clinic1") == local_size(clinic1)
        clinic1.succeed("test -s /var/lib/nixcomply/log/cosignatures/$(printf %012d " + str(local_size(clinic1)) + ")")

    with subtest("the upload timer, status, and a packet that carries the witness"):
        clinic2.succeed("systemctl start nixcomply-reconcile.service")  # a new entry
        clinic2.fail(f"nixcomply evidence verify /var/lib/nixcomply --keyring /var/lib/nixcomply-keys/keyring.json --witness '{witness}'")
        clinic2.succeed("systemctl start nixcomply-upload.service")
        clinic2.succeed(f"nixcomply evidence verify /var/lib/nixcomply --keyring /var/lib/nixcomply-keys/keyring.json --witness '{witness}'")
        assert json.loads(clinic2.succeed("nixcomply status --json"))["upload"]["lag_entries"] == 0
        clinic2.succeed(
            "nixcomply evidence export --state-dir /var/lib/nixcomply --from 2000-01-01 --to 2099-12-31 -o /tmp/packet.zip",
            f"nixcomply evidence verify /tmp/packet.zip --keyring /var/lib/nixcomply-keys/keyring.json --witness '{witness}'",
        )
  '';
}
