# Reconcile moves the node from generation A (what it booted) to revision B of its local
# fleet flake: built in the VM, tested, health-gated, switched; the evidence verifies on the
# node and a second run is a no-op.
{ ... }:
let
  scenario = import ./common/scenario.nix {
    revisions.revB = {
      revision = "B";
      appHealthy = true;
    };
  };
in
{
  name = "nixcomply-reconcile-switch";
  nodes.machine = scenario.node;

  testScript = scenario.prelude + ''
    booted = link("/run/booted-system")
    rev_b = commit("revB")

    with subtest("drift: B is built, tested, gated and switched"):
        machine.succeed("systemctl start nixcomply-reconcile.service")
        current = link("/run/current-system")
        assert current != booted, "the node still runs generation A"
        assert link("/nix/var/nix/profiles/system") == current, "B is not the boot default"
        got = machine.succeed("nixos-version --configuration-revision").strip()
        assert got == rev_b, f"expected configurationRevision {rev_b}, got {got}"
        assert machine.succeed("cat /etc/fleet-revision").strip() == "B"
        machine.wait_for_unit("app.service")

    with subtest("the evidence verifies offline on the node"):
        report = json.loads(machine.succeed(
            "nixcomply evidence verify --json --keyring /var/lib/nixcomply-keys/keyring.json /var/lib/nixcomply"
        ))
        assert report["ok"], report
        assert report["entries"] >= 1, report

    with subtest("a second run is a no-op"):
        machine.succeed("systemctl start nixcomply-reconcile.service")
        s = status()
        assert s["last_outcome"] == "nothing", s
        assert link("/run/current-system") == current

    with subtest("metrics are written for node-exporter"):
        machine.succeed("grep -q '^nixcomply_generation ' /var/lib/prometheus-node-exporter-text-files/nixcomply.prom")

    with subtest("re-activating the running generation is idempotent"):
        machine.succeed("/run/current-system/bin/switch-to-configuration test")
        machine.succeed("systemctl start nixcomply-reconcile.service")
        assert status()["last_outcome"] == "nothing"
  '';
}
