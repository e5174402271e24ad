# Evaluate modules/baseline.nix's assertions for some `nixcomply.exceptions` with the real Nix
# evaluator and a stand-in `lib` (nixpkgs is not available on the test machines). As the
# module system does, every exception field the user left out takes the default declared in
# modules/options.nix, and a field without a default throws the module system's own
# "was accessed but has no value defined" when read. Result: the failed assertions' messages.
{
  exceptions,
  baseline ? "hipaa-v1",
  controlIds ? [ "ssh.banner" "encryption.root-on-luks" ],
}:
let
  inherit (builtins) attrNames concatLists elemAt filter fromJSON head listToAttrs map;
  mkType = name: extra: { _type = "option-type"; inherit name; } // extra;
  types = rec {
    str = mkType "str" { };
    bool = mkType "bool" { };
    anything = mkType "anything" { };
    nullOr = t: mkType "nullOr" { inner = t; };
    listOf = t: mkType "listOf" { inner = t; };
    attrsOf = t: mkType "attrsOf" { inner = t; };
    enum = _: mkType "enum" { };
    submodule = m: mkType "submodule" { options = (if builtins.isFunction m then m { } else m).options; };
  };
  lib = {
    inherit types;
    mkOption = attrs: { _type = "option"; } // attrs;
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    concatLists = concatLists;
    mapAttrsToList = f: set: map (n: f n set.${n}) (attrNames set);
    toIntBase10 = s: fromJSON (if builtins.match "0+" s != null then "0" else builtins.head (builtins.match "0*([0-9]+)" s));
    versionOlder = a: b: builtins.compareVersions a b < 0;
    trivial.release = "26.05";
  };
  declared = (import ../../modules/options.nix { inherit lib; }).options.nixcomply;
  fields = declared.exceptions.type.inner.options;
  withDefaults =
    id: given:
    listToAttrs (
      map (name: {
        inherit name;
        value =
          if given ? ${name} then
            given.${name}
          else if fields.${name} ? default then
            fields.${name}.default
          else
            throw "The option `nixcomply.exceptions.\"${id}\".${name}' was accessed but has no value defined. Try setting the option.";
      }) (attrNames fields)
    );
  config.nixcomply = {
    inherit baseline;
    exceptions = builtins.mapAttrs withDefaults exceptions;
    internal.controlIds.${baseline} = controlIds;
  };
  module = import ../../modules/baseline.nix { inherit config lib; };
in
map (a: a.message) (filter (a: !a.assertion) module.config.assertions)
