# The module the flake exports as `nixosModules.default`: nixcomply's modules, with the
# flake's own package as the reconciler's default (an overlay's pkgs.nixcomply otherwise).
{ self }:
{ lib, pkgs, ... }:
{
  imports = [ ./default.nix ];
  nixcomply.reconciler.package = lib.mkDefault (
    pkgs.nixcomply or self.packages.${pkgs.stdenv.hostPlatform.system}.default
  );
}
