# The one wrapper every VM scenario goes through: the flake reaches each node as `self`
# (node.specialArgs), and option-documentation warnings are errors, so a module option
# without a proper description or type fails `nix flake check`.
{ pkgs, self }:
test:
pkgs.testers.runNixOSTest {
  imports = [ test ];
  node.specialArgs = { inherit self; };
  defaults = {
    documentation.nixos.options.warningsAreErrors = true;
  };
}
