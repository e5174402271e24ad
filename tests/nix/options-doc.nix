# Evaluate an options module with the real Nix evaluator and a stand-in `lib` (nixpkgs is not
# available on the test machines) and list every option: path, type as the NixOS manual
# writes it, default, description. The test compares this with the README's options table
# and feeds the defaults through modules/reconciler-config.nix.
{
  module,
  prefix ? [ ],
}:
let
  inherit (builtins) concatStringsSep concatMap attrNames isAttrs map toJSON;

  mkType = name: description: extra: { _type = "option-type"; inherit name description; } // extra;
  wrap = name: word: t: mkType name "${word}${t.description}" { inner = t; };
  types = rec {
    str = mkType "str" "string" { };
    lines = mkType "lines" "strings concatenated with \"\\n\"" { };
    bool = mkType "bool" "boolean" { };
    package = mkType "package" "package" { };
    unspecified = mkType "unspecified" "unspecified value" { };
    anything = mkType "anything" "anything" { };
    ints = {
      positive = mkType "positive" "positive integer, meaning >0" { };
      unsigned = mkType "unsigned" "unsigned integer, meaning >=0" { };
      between = lo: hi: mkType "between" "integer between ${toString lo} and ${toString hi} (both inclusive)" { };
    };
    port = mkType "port" "16 bit unsigned integer; between 0 and 65535 (both inclusive)" { };
    nullOr = wrap "nullOr" "null or ";
    listOf = wrap "listOf" "list of ";
    nonEmptyListOf = wrap "nonEmptyListOf" "non-empty list of ";
    attrsOf = wrap "attrsOf" "attribute set of ";
    enum = values: mkType "enum" ("one of " + concatStringsSep ", " (map (v: toJSON v) values)) { };
    strMatching = re: mkType "strMatching" "string matching the pattern ${re}" { };
    submodule = m: mkType "submodule" "submodule" { options = (if builtins.isFunction m then m { } else m).options; };
  };
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  mkOption = attrs: { _type = "option"; } // attrs;
  lib = {
    inherit types mkOption literalExpression;
    mkEnableOption = name: mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = "Whether to enable ${name}.";
    };
    mkPackageOption = _pkgs: name: args: mkOption {
      type = types.package;
      defaultText = literalExpression "pkgs.${name}";
      description = "The ${name} package to use." + (if (args.extraDescription or "") == "" then "" else " " + args.extraDescription);
    };
  };
  pkgs.formats.json = _: { type = mkType "json" "JSON value" { }; };
  config.networking.hostName = "example-host";

  declared = (import module { inherit lib pkgs config; }).options;

  render =
    o:
    if o ? defaultText then
      o.defaultText.text
    else if o ? default then
      toJSON o.default
    else
      null;

  walk =
    path: node:
    if isAttrs node && (node._type or null) == "option" then
      [
        {
          name = concatStringsSep "." path;
          type = node.type.description or null;
          default = render node;
          description = node.description or null;
          defaultValue = node.default or null;
          hasDefault = node ? default;
        }
      ]
      ++ subOptions path node.type
    else if isAttrs node then
      concatMap (n: walk (path ++ [ n ]) node.${n}) (attrNames node)
    else
      [ ];

  subOptions =
    path: t:
    if t.name == "submodule" then
      concatMap (n: walk (path ++ [ n ]) t.options.${n}) (attrNames t.options)
    else if t ? inner && t.name == "nullOr" then
      subOptions path t.inner
    else if t ? inner then
      subOptions (path ++ [ "*" ]) t.inner
    else
      [ ];

  select = builtins.foldl' (node: name: node.${name}) declared prefix;
in
walk prefix select
