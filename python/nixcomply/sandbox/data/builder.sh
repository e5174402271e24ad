# Builds one system toplevel of the nixcomply sandbox host (nix runs `/bin/sh -e builder.sh`;
# PATH comes from sandbox.json). Mirrors a NixOS toplevel where nixcomply looks.
# shellcheck shell=sh disable=SC2154  # $out and the rest are the derivation's attributes
mkdir -p "$out/bin" "$out/sw/bin" "$out/etc/nixcomply" "$out/etc/systemd/user"
printf '%s\n' "$nixosVersion" > "$out/nixos-version"
printf '%s' "$system" > "$out/system"
ln -s "$kernel/bzImage" "$out/kernel"
ln -s "$initrd/initrd" "$out/initrd"
ln -s "$kernelModules" "$out/kernel-modules"
if [ -n "$manifest" ]; then ln -s "$manifest" "$out/etc/nixcomply/manifest.json"; fi
# shellcheck disable=SC2086  # split on purpose: one store path per unit
set -- $unitDirs
for name in $unitNames; do
  ln -s "$1/$name" "$out/etc/systemd/user/$name"
  shift
done
printf 'nixcomply sandbox system "%s": an emulated NixOS toplevel, not a bootable system\n' "$label" \
  > "$out/nixcomply-sandbox"
{
  echo '#!/bin/sh'
  printf "version='%s'\nnixpkgs_revision='%s'\nconfiguration_revision='%s'\njson='%s'\n" \
    "$nixosVersion" "$nixpkgsRevision" "$configurationRevision" "$versionJson"
  cat "$nixosVersionScript"
} > "$out/sw/bin/nixos-version"
{
  echo '#!/bin/sh'
  printf "system='%s'\n" "$out"
  cat "$switchScript"
} > "$out/bin/switch-to-configuration"
chmod 0555 "$out/sw/bin/nixos-version" "$out/bin/switch-to-configuration"
