# Evaluate a rendered baseline module with the real Nix evaluator but without nixpkgs (which
# the sandbox host and the test machines do not have): a stand-in `lib` provides the few functions the generated
# file uses, in nixpkgs' own representation (`mkIf`/`mkMerge` build `_type`d sets that the
# module system later interprets), and `definitions` interprets them the same way: a false
# `mkIf` contributes nothing, a `mkMerge` contributes each of its parts.
#
# Result: for every way of evaluating asked for, the list of definitions in effect, each
# { path = [ names ]; value = ...; } with attribute sets descended to their leaves.
{
  module,
  baseline ? "hipaa-v1",
  # control id -> exception attrs; evaluated once per entry of `scenarios`
  scenarios ? { none = { }; },
  fileSystems ? { "/" = { device = "/dev/mapper/cryptroot"; fsType = "ext4"; }; },
  luksDevices ? { cryptroot = { device = "/dev/disk/by-uuid/0000"; }; },
  # stands in for the declared options the module probes (`options ? a.b.c`)
  options ? { },
  # nixcomply.parameters: site overrides of the baseline's parameters
  parameters ? { },
}:
let
  lib = {
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
  };

  definitions =
    path: value:
    if builtins.isAttrs value && value ? _type then
      if value._type == "if" then
        (if value.condition then definitions path value.content else [ ])
      else if value._type == "merge" then
        builtins.concatMap (definitions path) value.contents
      else
        throw "eval-rendered.nix: unsupported ${value._type} at ${builtins.concatStringsSep "." path}"
    else if builtins.isAttrs value && value != { } then
      builtins.concatMap (name: definitions (path ++ [ name ]) value.${name}) (builtins.attrNames value)
    else
      [ { inherit path value; } ];

  evaluate =
    exceptions:
    let
      config = {
        nixcomply = { inherit baseline exceptions parameters; };
        boot.initrd.luks.devices = luksDevices;
        inherit fileSystems;
      };
    in
    definitions [ ] (import module { inherit config lib options; }).config;
in
builtins.mapAttrs (_: evaluate) scenarios
