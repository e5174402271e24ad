# The module the flake exports as `nixosModules.default`: nixcomply's modules, with the
# flake's own package as the default wherever a package is needed.
{ self }:
{
  imports = [ ./default.nix ];
  _module.args.nixcomplyFlake = self;
}
