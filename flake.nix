{
  description = "nixcomply: NixOS-native HIPAA compliance baselines, a reconciler with health-gated switches, and signed evidence";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      eachSystem = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      nixosModules.nixcomply = import ./modules/flake-module.nix { inherit self; };
      nixosModules.default = self.nixosModules.nixcomply;

      overlays.default = final: _prev: {
        nixcomply = final.callPackage ./python/package.nix { };
        nixcomply-server = final.callPackage ./python/package.nix { withServer = true; };
      };

      packages = eachSystem (pkgs: {
        nixcomply = pkgs.callPackage ./python/package.nix { };
        nixcomply-server = pkgs.callPackage ./python/package.nix { withServer = true; };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.nixcomply;
      });

      apps = eachSystem (pkgs: import ./apps.nix { inherit pkgs self; });

      checks = eachSystem (pkgs: import ./checks { inherit pkgs self; });

      formatter = eachSystem (pkgs: pkgs.nixfmt-tree);
    };
}
