# Evaluate modules/reconciler.nix with the real Nix evaluator and stand-ins for `lib`, `pkgs`
# and the NixOS options it reads (nixpkgs is not available on the test machines). The
# reconciler's options take their declared defaults (modules/reconciler-options.nix), updated
# by `options`; mkIf and mkMerge are interpreted as the module system does. Result: what the
# tests look at in the service, its tmpfiles rules, and the messages of failing assertions.
{ options ? { } }:
let
  inherit (builtins) attrNames concatMap foldl' isAttrs isFunction listToAttrs map mapAttrs;
  mkType = name: extra: { _type = "option-type"; inherit name; } // extra;
  types = rec {
    str = mkType "str" { };
    bool = mkType "bool" { };
    package = mkType "package" { };
    anything = mkType "anything" { };
    ints = { positive = mkType "int" { }; unsigned = mkType "int" { }; };
    nullOr = t: mkType "nullOr" { inner = t; };
    listOf = t: mkType "listOf" { inner = t; };
    nonEmptyListOf = t: mkType "listOf" { inner = t; };
    attrsOf = t: mkType "attrsOf" { inner = t; };
    enum = _: mkType "enum" { };
    strMatching = _: str;
    submodule = m: mkType "submodule" { options = (if isFunction m then m { } else m).options; };
  };
  recursiveUpdate = a: b: a // mapAttrs (n: v: if isAttrs v && isAttrs (a.${n} or null) && !(v ? _type) then recursiveUpdate a.${n} v else v) b;
  lib = rec {
    inherit types recursiveUpdate;
    mkOption = attrs: { _type = "option"; } // attrs;
    mkEnableOption = _: mkOption { type = types.bool; default = false; };
    mkPackageOption = _: name: _: mkOption { type = types.package; default = "pkgs.${name}"; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    optional = c: x: if c then [ x ] else [ ];
    hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
    hasInfix = i: s: builtins.match ".*${i}.*" s != null;
    getExe = p: "${p}/bin/exe";
    concatMap = builtins.concatMap;
  };
  pkgs = {
    formats.json = _: { type = types.anything; generate = name: _: "/nix/store/0000-${name}"; };
  } // listToAttrs (map (n: { name = n; value = "/nix/store/0000-${n}"; }) [ "git" "util-linux" "cryptsetup" "nftables" "audit" "kmod" "restic" "borgbackup" "nixcomply" ]);

  optionsModule = import ../../modules/reconciler-options.nix { inherit lib pkgs; config.networking.hostName = "clinic-01"; };
  defaults =
    node:
    if (node._type or null) == "option" then
      node.default or null
    else
      mapAttrs (_: defaults) node;
  cfg = recursiveUpdate (defaults optionsModule.options.nixcomply.reconciler) ({ enable = true; flake = "git+file:///f"; } // options);

  config = {
    nixcomply.reconciler = cfg;
    nix.package = "/nix/store/0000-nix";
    system.build.nixos-rebuild = "/nix/store/0000-nixos-rebuild";
    systemd.package = "/nix/store/0000-systemd";
    programs.ssh.package = "/nix/store/0000-openssh";
    services.chrony = { enable = false; package = null; };
    networking.firewall = { enable = false; package = null; };
  };

  # mkIf/mkMerge as the module system reads them: a false mkIf is absent, a merge is the
  # recursive union of its parts.
  resolve =
    v:
    if isAttrs v && (v._type or null) == "if" then
      (if v.condition then resolve v.content else null)
    else if isAttrs v && (v._type or null) == "merge" then
      foldl' (acc: part: let r = resolve part; in if r == null then acc else recursiveUpdate acc r) { } v.contents
    else if isAttrs v then
      mapAttrs (_: resolve) v
    else
      v;
  evaluated = resolve (import ../../modules/reconciler.nix { inherit config lib pkgs; }).config;
  service = evaluated.systemd.services.nixcomply-reconcile.serviceConfig;
in
{
  readWritePaths = service.ReadWritePaths;
  stateDirectory = service.StateDirectory;
  tmpfiles = evaluated.systemd.tmpfiles.settings."10-nixcomply";
  hardening = removeAttrs service [ "ExecStart" "LoadCredential" "ReadWritePaths" "StateDirectory" ];
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) evaluated.assertions);
}
