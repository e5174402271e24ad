# A revision whose service fails its health gate is reverted: the node re-activates the
# generation the boot default still points at, records `reverted`, and does not retry the
# revision until it changes or an operator runs `nixcomply reset`.
{ ... }:
let
  scenario = import ./common/scenario.nix {
    revisions = {
      revB = {
        revision = "B";
        appHealthy = true;
      };
      revBroken = {
        revision = "B-prime";
        appHealthy = false;
      };
    };
  };
in
{
  name = "nixcomply-reconcile-revert";
  nodes.machine = scenario.node;

  testScript = scenario.prelude + ''
    commit("revB")
    machine.succeed("systemctl start nixcomply-reconcile.service")
    good = link("/run/current-system")
    assert link("/nix/var/nix/profiles/system") == good

    rev_bad = commit("revBroken")
    with subtest("the failed health gate reverts"):
        # reconcile exits 1 on a revert, so the oneshot unit fails
        machine.fail("systemctl start nixcomply-reconcile.service")
        assert link("/run/current-system") == good, "the broken revision is still running"
        assert link("/nix/var/nix/profiles/system") == good, "the boot default moved"
        assert machine.succeed("cat /etc/fleet-revision").strip() == "B"
        machine.wait_for_unit("app.service")
        journal = machine.succeed("journalctl -u nixcomply-reconcile.service")
        assert "reverted" in journal, journal

    with subtest("the revision is blocked until reset"):
        s = status()
        assert [b["revision"] for b in s["blocked"]] == [rev_bad], s
        machine.fail("systemctl start nixcomply-reconcile.service")
        assert link("/run/current-system") == good
        machine.succeed("nixcomply reset")

    with subtest("the evidence records the revert and verifies"):
        report = json.loads(machine.succeed(
            "nixcomply evidence verify --json --keyring /var/lib/nixcomply-keys/keyring.json /var/lib/nixcomply"
        ))
        assert report["ok"], report
        assert int(machine.succeed(
            "grep -rlE '\"outcome\": ?\"reverted\"' /var/lib/nixcomply/evidence --include statement.json | wc -l"
        )) >= 1
  '';
}
