# The module the flake exports as `nixosModules.default`: nixcomply's modules, with the
# flake's own packages as the reconciler's and the server's defaults (an overlay's otherwise).
{ self }:
{ lib, pkgs, ... }:
{
  imports = [ ./default.nix ];
  nixcomply.reconciler.package = lib.mkDefault (
    pkgs.nixcomply or self.packages.${pkgs.stdenv.hostPlatform.system}.default
  );
  services.nixcomply-server.package = lib.mkDefault (
    pkgs.nixcomply-server or self.packages.${pkgs.stdenv.hostPlatform.system}.nixcomply-server
  );
}
