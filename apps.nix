# `nix run .#<app>`: thin wrappers around the nixcomply command, arguments passed through.
{ pkgs, self }:
let
  nixcomply = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
  app = name: description: text: {
    type = "app";
    program = pkgs.lib.getExe (
      pkgs.writeShellApplication {
        inherit name text;
        runtimeInputs = [ nixcomply ];
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
  '';
  # Renders the baseline shipped with the package unless a BASELINE argument is given:
  # `nix run .#render -- -o modules/baselines/hipaa-v1.nix`.
  render = app "nixcomply-render" "Render a nixcomply baseline into a NixOS module" ''
    exec nixcomply render "$@"
  '';
  default = reconcile;
}
