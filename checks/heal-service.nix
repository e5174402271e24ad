# A critical service stopped by hand is found by the runtime checks on the next reconcile,
# restarted by runbook RB-SERVICE-001, verified by re-running the check, and recorded as a
# signed remediation statement.
{ ... }:
let
  scenario = import ./common/scenario.nix {
    revisions.revA = {
      revision = "A";
      appHealthy = true;
    };
  };
in
{
  name = "nixcomply-heal-service";
  # fleet-node.nix makes app.service critical and lets runbooks restart it
  nodes.machine = scenario.node;

  testScript = scenario.prelude + ''
    commit("revA")
    machine.succeed("systemctl start nixcomply-reconcile.service")
    machine.wait_for_unit("app.service")

    with subtest("a stopped critical service is healed"):
        machine.succeed("systemctl stop app.service")
        machine.succeed("systemctl start nixcomply-reconcile.service")
        machine.wait_for_unit("app.service")
        journal = machine.succeed("journalctl -u nixcomply-reconcile.service")
        assert "RB-SERVICE-001" in journal, journal

    with subtest("the heal is signed evidence and verifies"):
        statements = machine.succeed(
            "grep -rlE '\"runbook\": ?\"RB-SERVICE-001\"' /var/lib/nixcomply/evidence --include statement.json"
        ).split()
        assert statements, "no remediation statement for RB-SERVICE-001"
        report = json.loads(machine.succeed(
            "nixcomply evidence verify --json --keyring /var/lib/nixcomply-keys/keyring.json /var/lib/nixcomply"
        ))
        assert report["ok"], report
  '';
}
