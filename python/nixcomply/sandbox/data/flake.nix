# The nixcomply sandbox host's flake (written by nixcomply.sandbox; see README.md).
# The toplevel is a plain derivation built with /bin/sh, shaped like a NixOS system toplevel
# where nixcomply looks; there is no nixpkgs and nothing here is bootable.
{
  description = "nixcomply sandbox host";

  outputs = { self }:
    let
      sandbox = builtins.fromJSON (builtins.readFile ./sandbox.json);
      gen = builtins.fromJSON (builtins.readFile ./generation.json);
      # what a real client flake passes as system.configurationRevision
      revision = self.rev or self.dirtyRev or null;

      mk = name: script: builtins.derivation {
        inherit name;
        inherit (sandbox) system;
        PATH = sandbox.path;
        builder = "/bin/sh";
        args = [ "-e" "-c" script ];
      };

      kernel = mk "linux-${gen.kernel}" "mkdir $out; echo 'sandbox kernel ${gen.kernel}' > $out/bzImage";
      initrd = mk "initrd-linux-${gen.kernel}" "mkdir $out; echo 'sandbox initrd ${gen.kernel}' > $out/initrd";
      kernelModules = mk "linux-${gen.kernel}-modules" "mkdir -p $out/lib/modules/${gen.kernel}";

      # one store directory per unit, holding a file of the unit's own name (as NixOS does,
      # so systemd never sees a link whose target has another name)
      unitNames = builtins.attrNames gen.units;
      unit = unitName: builtins.derivation {
        name = "unit-" + builtins.replaceStrings [ "@" ":" ] [ "-" "-" ] unitName;
        inherit (sandbox) system;
        inherit unitName;
        PATH = sandbox.path;
        text = gen.units.${unitName};
        builder = "/bin/sh";
        args = [ "-e" "-c" "mkdir $out; printf '%s' \"$text\" > \"$out/$unitName\"" ];
      };

      versionJson = builtins.toJSON (
        { nixosVersion = gen.nixosVersion; }
        // (if gen.nixpkgsRevision == null then { } else { nixpkgsRevision = gen.nixpkgsRevision; })
        // (if revision == null then { } else { configurationRevision = revision; })
      );

      toplevel = builtins.derivation {
        name = "nixos-system-${sandbox.host}-${gen.nixosVersion}";
        inherit (sandbox) system;
        PATH = sandbox.path;
        builder = "/bin/sh";
        args = [ "-e" ./builder.sh ];
        inherit kernel initrd kernelModules versionJson unitNames;
        unitDirs = map unit unitNames;
        label = gen.label;
        nixosVersion = gen.nixosVersion;
        nixpkgsRevision = if gen.nixpkgsRevision == null then "" else gen.nixpkgsRevision;
        configurationRevision = if revision == null then "" else revision;
        manifest = if builtins.pathExists ./manifest.json then ./manifest.json else "";
        nixosVersionScript = ./nixos-version.sh;
        switchScript = ./switch-to-configuration.sh;
      };
    in
    {
      nixosConfigurations.${sandbox.host}.config.system.build.toplevel = toplevel;
    };
}
