# nixcomply sandbox: emulated nixos-version; the values above were fixed when the system was built.
# shellcheck shell=sh disable=SC2154  # $json, $version ... are set by the lines builder.sh puts above
case "${1:-}" in
  --json) printf '%s\n' "$json" ;;
  --hash|--revision)
    if [ -z "$nixpkgs_revision" ]; then echo "$0: Nixpkgs commit hash is unknown" >&2; exit 1; fi
    printf '%s\n' "$nixpkgs_revision" ;;
  --configuration-revision)
    if [ -z "$configuration_revision" ]; then echo "$0: configuration revision is unknown" >&2; exit 1; fi
    printf '%s\n' "$configuration_revision" ;;
  "") printf '%s (nixcomply sandbox)\n' "$version" ;;
  *) echo "usage: $0 [--json | --hash | --revision | --configuration-revision]" >&2; exit 1 ;;
esac
