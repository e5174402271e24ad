# nixcomply's NixOS module: `nixosModules.default` of the flake.
{
  imports = [
    ./options.nix
    ./baseline.nix
    ./reconciler.nix
    ./uplink.nix
    ./server.nix
  ];
}
