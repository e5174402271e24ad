# `nix flake check`: every checks/<name>.nix other than this file and lib.nix is a NixOS VM
# test scenario (discovered, one per file), plus the Python unit tests and render freshness.
{ pkgs, self }:
let
  inherit (pkgs) lib;
  runTest = import ./lib.nix { inherit pkgs self; };
  scenarios = lib.filterAttrs (
    name: type: type == "regular" && lib.hasSuffix ".nix" name && name != "default.nix" && name != "lib.nix"
  ) (builtins.readDir ./.);
  nixcomply = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
in
lib.mapAttrs' (
  name: _: lib.nameValuePair (lib.removeSuffix ".nix" name) (runTest (import (./. + "/${name}")))
) scenarios
// {
  # The generated modules are what rendering gives today.
  render-fresh = pkgs.runCommand "nixcomply-render-fresh" { nativeBuildInputs = [ nixcomply ]; } ''
    nixcomply render ${../baseline/hipaa-v1.yaml} --nixos-release 26.05 -o ${../modules/baselines/hipaa-v1.nix} --check
    nixcomply render ${../baseline/hipaa-v1.yaml} --nixos-release unstable -o ${../modules/baselines/hipaa-v1.unstable.nix} --check
    touch $out
  '';

  # Every option of the module renders to documentation without warnings (a missing type or
  # description fails here, as it would in the NixOS manual).
  module-options-doc =
    (pkgs.nixosOptionsDoc {
      options =
        (lib.evalModules {
          modules = [
            self.nixosModules.default
            { _module.check = false; }
          ];
          specialArgs = { inherit pkgs; };
        }).options.nixcomply;
      warningsAreErrors = true;
    }).optionsJSON;

  # The unit tests (those needing the real nix store or a systemd manager run in CI, `make test`).
  python-unit =
    pkgs.runCommand "nixcomply-python-unit"
      {
        nativeBuildInputs = [
          (pkgs.python3.withPackages (
            ps: with ps; [
              pydantic
              pyyaml
              jinja2
              cryptography
              pytest
              pytest-timeout
              hypothesis
              securesystemslib
              prometheus-client
              # the server's tests import it (those needing PostgreSQL are deselected)
              fastapi
              uvicorn
              sqlalchemy
              psycopg
              alembic
            ]
          ))
        ];
      }
      ''
        cp -r ${self} src && chmod -R u+w src && cd src
        export PYTHONPATH=$PWD/python HOME=$TMPDIR
        python -m pytest -c python/pyproject.toml --rootdir=. -p no:cacheprovider \
          -m "not nix and not systemd and not host and not lint and not postgres" tests
        touch $out
      '';
}
