# The fleet flake the VM scenarios build inside the node, offline: nixpkgs and nixcomply are
# `path:` inputs pointing at store paths in the node's closure. Each revision's machine
# imports the same test instrumentation and qemu-vm modules as the node, so the test driver
# keeps its backdoor after a switch. Returns the files of the flake directory.
{
  pkgs,
  lib,
  self,
  revision,
  appHealthy,
}:
{
  "flake.nix" = ''
    {
      inputs.nixpkgs.url = "path:${pkgs.path}";
      inputs.nixcomply.url = "path:${self}";
      # nixcomply's own lock pins a nixpkgs the VM does not have offline: use the fleet's
      inputs.nixcomply.inputs.nixpkgs.follows = "nixpkgs";
      outputs = { self, nixpkgs, nixcomply }: {
        nixosConfigurations.machine = nixpkgs.lib.nixosSystem {
          system = "${pkgs.stdenv.hostPlatform.system}";
          modules = [
            "''${nixpkgs}/nixos/modules/testing/test-instrumentation.nix"
            "''${nixpkgs}/nixos/modules/virtualisation/qemu-vm.nix"
            nixcomply.nixosModules.default
            (import ./fleet-node.nix { revision = "${revision}"; appHealthy = ${lib.boolToString appHealthy}; })
            { system.configurationRevision = self.rev or null; networking.hostName = "machine"; }
          ];
        };
      };
    }
  '';
  "fleet-node.nix" = builtins.readFile ./fleet-node.nix;
}
