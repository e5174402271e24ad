# What every VM scenario's node and every revision of its in-VM fleet flake share: the
# hipaa-v1 baseline, the reconciler pointed at /var/lib/fleet, and a small "app" service the
# health gate watches. `revision` (a string) marks the revision; `appHealthy = false` makes
# the app exit at once so the health gate fails.
{
  revision ? "A",
  appHealthy ? true,
}:
{ lib, pkgs, ... }:
{
  nixcomply.baseline = "hipaa-v1";
  nixcomply.exceptions = {
    "encryption.root-on-luks" = {
      justification = "VM test: ephemeral unencrypted disk image";
      approvedBy = "ci@nixcomply.test";
      expires = "2099-12-31";
      ticket = "TEST-1";
    };
    # the test driver and in-VM builds use the nix daemon as root only, but the baseline's
    # runtime checks would flag USB storage modules the VM image loads
    "devices.usb-storage-blocked" = {
      justification = "VM test: the image's initrd carries usb-storage";
      approvedBy = "ci@nixcomply.test";
      expires = "2099-12-31";
      ticket = "TEST-2";
    };
  };

  # site policy: the clinic's app is a critical service the checks watch and heal
  nixcomply.parameters.critical_services = [
    "sshd.service"
    "auditd.service"
    "chronyd.service"
    "systemd-journald.service"
    "nftables.service"
    "app.service"
  ];

  nixcomply.reconciler = {
    enable = true;
    flake = "git+file:///var/lib/fleet?ref=main";
    hostAttribute = "machine";
    signingKeyFile = "/var/lib/nixcomply-keys/bundle.key";
    logKeyFile = "/var/lib/nixcomply-keys/log.key";
    healthGate = {
      criticalUnits = [
        "sshd.service"
        "app.service"
      ];
      timeout = 60;
    };
    metrics.enable = true;
    settings.heal.allowed_units = [ "app.service" ];
  };

  services.openssh.enable = true;
  # immutable users (access.immutable-users) need a way in for root; the test driver uses its
  # own backdoor, this key only satisfies NixOS's assertion
  users.users.root.openssh.authorizedKeys.keys = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKTestKeyOnlyForTheNixcomplyVmTests000000000 test"
  ];

  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];

  environment.etc."fleet-revision".text = revision;
  systemd.services.app = {
    description = "the clinic's application (VM test, revision ${revision})";
    wantedBy = [ "multi-user.target" ];
    serviceConfig = {
      Type = "exec";
      ExecStart =
        if appHealthy then "${pkgs.coreutils}/bin/sleep infinity" else "${pkgs.coreutils}/bin/false";
    };
  };
  environment.systemPackages = [ pkgs.git ];
}
