# The hipaa-v1 baseline is effective on a booted NixOS: sshd's effective settings, auditd and
# its rules, the firewall, persistent journald and the manifest are all in place, and the
# one excepted control's setting is absent while its exception is recorded.
{ lib, ... }:
{
  name = "nixcomply-baseline-hipaa";

  nodes.machine =
    { self, ... }:
    {
      imports = [ self.nixosModules.default ];

      nixcomply.baseline = "hipaa-v1";
      nixcomply.exceptions = {
        # The test VM's disks are ephemeral images without LUKS.
        "encryption.root-on-luks" = {
          justification = "VM test: ephemeral unencrypted disk image";
          approvedBy = "ci@nixcomply.test";
          expires = "2099-12-31";
          ticket = "TEST-1";
        };
        # The excepted control whose setting the script proves absent.
        "ssh.max-auth-tries" = {
          justification = "VM test: prove an excepted control renders to nothing";
          approvedBy = "ci@nixcomply.test";
          expires = "2099-12-31";
          ticket = "TEST-2";
        };
      };

      services.openssh.enable = true;
      # immutable users (access.immutable-users) need a way in for root; the test driver uses
      # its own backdoor, this key only satisfies NixOS's assertion
      users.users.root.openssh.authorizedKeys.keys = [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKTestKeyOnlyForTheNixcomplyVmTests000000000 test"
      ];
    };

  testScript = ''
    import json

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("sshd.service")

    def sshd(key):
        out = machine.succeed("sshd -T")
        for line in out.splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return v
        raise AssertionError(f"sshd -T does not print {key}")

    with subtest("sshd's effective configuration follows the baseline"):
        for key, expected in [
            ("passwordauthentication", "no"),
            ("permitemptypasswords", "no"),
            ("kbdinteractiveauthentication", "no"),
            ("permitrootlogin", "no"),
            ("x11forwarding", "no"),
            ("allowtcpforwarding", "no"),
            ("allowagentforwarding", "no"),
            ("loglevel", "VERBOSE"),
            ("logingracetime", "30"),
            ("maxstartups", "10:30:60"),
            ("channeltimeout", "session=15m"),
            ("unusedconnectiontimeout", "300"),
            ("tcpkeepalive", "no"),
            ("ignoreuserknownhosts", "yes"),
        ]:
            got = sshd(key)
            assert got == expected, f"sshd -T {key}: expected {expected}, got {got}"

    with subtest("the excepted control's setting is absent"):
        got = sshd("maxauthtries")
        assert got == "6", f"ssh.max-auth-tries is excepted, so sshd's default 6 applies; got {got}"

    with subtest("auditd runs with the baseline's rules, locked"):
        machine.wait_for_unit("auditd.service")
        rules = machine.succeed("auditctl -l")
        # auditctl prints watches as `-w PATH -p wa -k KEY`, syscall rules with `-F key=KEY`
        for key in ["identity", "sudoers", "time-change", "logins", "session", "system-locale"]:
            assert f" -k {key}" in rules, f"watch with key {key} missing from:\n{rules}"
        for key in ["privileged", "modules", "time-change", "access", "perm_mod", "delete", "mounts"]:
            assert f" -F key={key}" in rules, f"syscall rule with key {key} missing from:\n{rules}"
        assert "arch=b32" in rules, f"no 32-bit rules in:\n{rules}"
        status = dict(line.split(" ", 1) for line in machine.succeed("auditctl -s").splitlines() if " " in line)
        assert status["enabled"].split()[0] == "2", f"audit rules are not locked: {status}"
        cmdline = machine.succeed("cat /proc/cmdline").split()
        assert "audit=1" in cmdline and "audit_backlog_limit=8192" in cmdline, cmdline

    with subtest("the firewall is up and logs refused connections"):
        # with networking.nftables.enable the NixOS firewall runs as nftables.service;
        # firewall.service exists only for the iptables backend
        machine.wait_for_unit("nftables.service")
        ruleset = machine.succeed("nft list ruleset")
        assert "policy drop" in ruleset, f"no default drop in:\n{ruleset}"
        assert "refused connection" in ruleset, f"refused connections are not logged:\n{ruleset}"

    with subtest("journald keeps the journal on disk"):
        machine.succeed("test -d /var/log/journal")
        conf = machine.succeed("systemd-analyze cat-config systemd/journald.conf")
        assert "Storage=persistent" in conf, f"journald storage is not persistent:\n{conf}"

    with subtest("the manifest records controls and the exceptions"):
        manifest = json.loads(machine.succeed("cat /etc/nixcomply/manifest.json"))
        assert manifest["baseline"]["id"] == "hipaa-v1", manifest["baseline"]
        controls = manifest["controls"]
        assert controls["ssh.max-auth-tries"]["status"] == "excepted", controls["ssh.max-auth-tries"]
        assert controls["ssh.password-auth-disabled"]["status"] == "enforced"
        assert set(manifest["exceptions"]) == {"encryption.root-on-luks", "ssh.max-auth-tries"}, manifest["exceptions"]

    with subtest("re-activation is idempotent"):
        machine.succeed("/run/current-system/bin/switch-to-configuration test")
        assert sshd("passwordauthentication") == "no"
  '';
}
