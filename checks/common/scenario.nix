# Shared parts of the reconciler VM scenarios: the node (hipaa-v1, the reconciler, an empty
# fleet repository, revisions of the fleet flake under /etc/fleet/<name>/) and helper
# functions for the test script.
{
  revisions,
  memorySize ? 4096,
}:
{
  node =
    { self, pkgs, lib, ... }:
    {
      imports = [
        self.nixosModules.default
        (import ./fleet-node.nix { })
      ];
      networking.hostName = "machine";
      virtualisation.memorySize = memorySize;
      virtualisation.diskSize = 8192;
      # The node builds the fleet's revisions itself, offline: everything their toplevels
      # need to build is in its closure (the same approach as nixpkgs' nixos-rebuild tests).
      system.includeBuildDependencies = true;
      environment.etc = lib.concatMapAttrs (
        name: r:
        lib.mapAttrs' (file: text: lib.nameValuePair "fleet/${name}/${file}" { inherit text; }) (
          import ./fleet-flake.nix {
            inherit pkgs lib self;
            inherit (r) revision appHealthy;
          }
        )
      ) revisions;
    };

  prelude = ''
    import json

    def commit(name):
        """Put revision `name` into the fleet repository, lock it and commit it; its git
        revision. The reconciler reads flakes with --no-update-lock-file, so the lock is part
        of the revision (nix locks the two path: inputs offline)."""
        machine.succeed(f"cp -rT /etc/fleet/{name} /var/lib/fleet && chmod -R u+w /var/lib/fleet")
        machine.succeed(
            "git -C /var/lib/fleet add -A && "
            "nix flake lock /var/lib/fleet && "
            "git -C /var/lib/fleet add -A && "
            f"git -C /var/lib/fleet -c user.name=ci -c user.email=ci@nixcomply.test commit -qm {name}"
        )
        return machine.succeed("git -C /var/lib/fleet rev-parse HEAD").strip()

    def link(path):
        return machine.succeed(f"readlink -f {path}").strip()

    def status():
        return json.loads(machine.succeed("nixcomply status --json"))

    machine.wait_for_unit("multi-user.target")
    machine.succeed("mkdir -p /var/lib/fleet && git -C /var/lib/fleet init -q -b main")
    machine.succeed(
        "mkdir -p /var/lib/nixcomply-keys /var/lib/nixcomply && chmod 700 /var/lib/nixcomply-keys",
        "nixcomply evidence keygen --role bundle --name machine-evidence "
        "--out /var/lib/nixcomply-keys/bundle.key --keyring /var/lib/nixcomply/keyring.json",
        "nixcomply evidence keygen --role log --name nixcomply/machine "
        "--out /var/lib/nixcomply-keys/log.key --keyring /var/lib/nixcomply/keyring.json",
        # the operator's copy of the keyring, made when the keys are: `evidence verify`
        # against the store's own keyring.json proves nothing about who signed (exit 3)
        "cp /var/lib/nixcomply/keyring.json /var/lib/nixcomply-keys/keyring.json",
    )
  '';
}
