#!/bin/sh
# nixcomply sandbox: EMULATED nixos-rebuild (written by nixcomply.sandbox), first on the
# sandbox's PATH. Implements only what nixcomply runs, with the real commands:
#   test|dry-activate --store-path P  ->  P/bin/switch-to-configuration ACTION
#   switch|boot --store-path P        ->  nix-env -p $ROOT/nix/var/nix/profiles/system --set P, then the same
#   list-generations [--json]         ->  nix-env --list-generations, in nixos-rebuild-ng's shape
set -eu
me="nixos-rebuild (nixcomply sandbox)"
die() { echo "$me: $*" >&2; exit 1; }
root="${NIXCOMPLY_SANDBOX_ROOT:-}"
if [ -z "$root" ] || [ "$root" = / ] || [ ! -f "$root/nixcomply-sandbox-root" ]; then
  die "refusing to run: NIXCOMPLY_SANDBOX_ROOT does not name a sandbox root"
fi
profile="$root/nix/var/nix/profiles/system"
action=""; store_path=""; json=""
while [ $# -gt 0 ]; do
  case "$1" in
    switch|boot|test|dry-activate|list-generations)
      if [ -n "$action" ]; then die "more than one action"; fi
      action=$1 ;;
    --store-path)
      if [ $# -lt 2 ]; then die "--store-path needs a path"; fi
      store_path=$2; shift ;;
    --store-path=*) store_path=${1#--store-path=} ;;
    --no-reexec) ;;  # there is nothing to re-execute into here
    --json) json=1 ;;
    *) die "unsupported argument '$1' (emulated: test|switch|boot|dry-activate --store-path PATH, list-generations [--json])" ;;
  esac
  shift
done

json_string() {
  printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

case "$action" in
  test|switch|boot|dry-activate)
    if [ -z "$store_path" ]; then die "only --store-path is emulated: the sandbox does not evaluate configurations"; fi
    if [ ! -e "$store_path/nixos-version" ] || [ ! -x "$store_path/bin/switch-to-configuration" ]; then
      die "$store_path is not a NixOS system closure (no nixos-version or bin/switch-to-configuration)"
    fi
    case "$action" in
      switch|boot)
        mkdir -p "${profile%/*}"
        nix-env -p "$profile" --set "$store_path" ;;
    esac
    status=0
    "$store_path/bin/switch-to-configuration" "$action" || status=$?
    if [ "$status" -ne 0 ]; then
      echo "$me: switch-to-configuration $action exited with status $status" >&2
      exit "$status"
    fi
    echo "Done. The new configuration is" >&2
    echo "$store_path" ;;
  list-generations)
    if [ ! -e "$profile" ]; then die "no profile 'system' found"; fi
    if [ -n "$json" ]; then echo "["; else
      printf '%-11s %-20s %-24s %-10s %-41s %s\n' Generation Build-date "NixOS version" Kernel \
        "Configuration Revision" Current
    fi
    nix-env -p "$profile" --list-generations | sort -k1,1nr | {
      first=1
      while read -r number day time flag; do
        link="$profile-$number-link"
        version=$(cat "$link/nixos-version" 2>/dev/null || echo Unknown)
        kernel=Unknown
        for k in "$link/kernel-modules/lib/modules"/*; do
          if [ -e "$k" ]; then kernel=${k##*/}; break; fi
        done
        revision=$("$link/sw/bin/nixos-version" --configuration-revision 2>/dev/null || echo Unknown)
        current=false
        if [ "${flag:-}" = "(current)" ]; then current=true; fi
        specs=""
        for s in "$link"/specialisation/*; do
          if [ -d "$s" ]; then specs="$specs${specs:+, }$(json_string "${s##*/}")"; fi
        done
        if [ -n "$json" ]; then
          if [ -z "$first" ]; then echo "  },"; fi
          first=""
          printf '  {\n    "generation": %s,\n    "date": %s,\n    "nixosVersion": %s,\n' \
            "$number" "$(json_string "$day $time")" "$(json_string "$version")"
          printf '    "kernelVersion": %s,\n    "configurationRevision": %s,\n' \
            "$(json_string "$kernel")" "$(json_string "$revision")"
          printf '    "specialisations": [%s],\n    "current": %s\n' "$specs" "$current"
        else
          printf '%-11s %-20s %-24s %-10s %-41s %s\n' "$number" "$day $time" "$version" "$kernel" \
            "$revision" "$(if [ "$current" = true ]; then echo '*'; fi)"
        fi
      done
      if [ -n "$json" ] && [ -z "$first" ]; then echo "  }"; fi
    }
    if [ -n "$json" ]; then echo "]"; fi ;;
  "") die "no action given" ;;
esac
