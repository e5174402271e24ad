# `nix run .#<app>`: thin wrappers around the nixcomply command, arguments passed through.
{ pkgs, self }:
let
  nixcomply = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
  nixcomply-server = self.packages.${pkgs.stdenv.hostPlatform.system}.nixcomply-server;
  app = name: description: text: runtime: {
    type = "app";
    program = pkgs.lib.getExe (
      pkgs.writeShellApplication {
        inherit name text;
        runtimeInputs = [ runtime ];
      }
    );
    meta = { inherit description; };
  };
in
rec {
  # `nix run .#reconcile -- plan`, `-- --dry-run`, `-- --config FILE` ...: the first argument
  # may name another reconciler verb (plan, status, reset, daemon); otherwise it reconciles.
  reconcile = app "nixcomply-reconcile" "Reconcile this host to its approved NixOS generation" ''
    case "''${1:-}" in
      plan|status|reset|daemon|reconcile|apply) exec nixcomply "$@" ;;
      *) exec nixcomply reconcile "$@" ;;
    esac
  '' nixcomply;
  # Renders the baseline shipped with the package unless a BASELINE argument is given:
  # `nix run .#render -- -o modules/baselines/hipaa-v1.nix`.
  render = app "nixcomply-render" "Render a nixcomply baseline into a NixOS module" ''
    exec nixcomply render "$@"
  '' nixcomply;
  # `nix run .#server -- serve --config server.json`, `-- host invite --site S --host H`, ...
  server = app "nixcomply-server" "The MSP's evidence server and its operator verbs" ''
    exec nixcomply-server "$@"
  '' nixcomply-server;
  default = reconcile;
}
