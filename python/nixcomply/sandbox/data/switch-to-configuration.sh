# nixcomply sandbox: EMULATED switch-to-configuration, not NixOS's. It moves
# $NIXCOMPLY_SANDBOX_ROOT/run/current-system and, when the sandbox is attached to a private
# systemd user manager (NIXCOMPLY_SANDBOX_SYSTEMD=user), reloads it, stops removed units,
# restarts new or changed ones and exits 4 when a unit failed, like the real one.
# shellcheck shell=sh disable=SC2154  # $system is set by the line builder.sh puts above
set -eu
action="${1:-}"
case "$action" in
  switch|boot|test|dry-activate) ;;
  *) echo "Usage: $0 [switch|boot|test|dry-activate]" >&2; exit 1 ;;
esac
root="${NIXCOMPLY_SANDBOX_ROOT:-}"
if [ -z "$root" ] || [ "$root" = / ] || [ ! -f "$root/nixcomply-sandbox-root" ]; then
  echo "$0: refusing to run: this is the nixcomply sandbox's emulated switch-to-configuration" \
    "and NIXCOMPLY_SANDBOX_ROOT does not name a sandbox root" >&2
  exit 1
fi
current="$root/run/current-system"
old=""
if [ -L "$current" ]; then old=$(readlink "$current"); fi
units=etc/systemd/user

list_units() {
  if [ -z "$1" ] || [ ! -d "$1/$units" ]; then return 0; fi
  for f in "$1/$units"/*; do
    if [ -L "$f" ] || [ -e "$f" ]; then printf '%s\n' "${f##*/}"; fi
  done
}

changed=""
for u in $(list_units "$system"); do
  before=""
  if [ -n "$old" ]; then before=$(readlink "$old/$units/$u" 2>/dev/null || true); fi
  if [ "$before" != "$(readlink "$system/$units/$u")" ]; then changed="$changed $u"; fi
done
removed=""
for u in $(list_units "$old"); do
  if [ ! -L "$system/$units/$u" ] && [ ! -e "$system/$units/$u" ]; then removed="$removed $u"; fi
done

case "$action" in
  dry-activate)
    echo "would activate the configuration $system"
    if [ -n "$removed" ]; then echo "would stop the following units:$removed"; fi
    if [ -n "$changed" ]; then echo "would restart the following units:$changed"; fi
    exit 0 ;;
  boot)
    echo "sandbox: no boot loader; the system profile names the next boot ($system)"
    exit 0 ;;
esac

systemd=""
if [ "${NIXCOMPLY_SANDBOX_SYSTEMD:-}" = user ]; then systemd=1; fi

if [ -n "$systemd" ] && [ -n "$removed" ]; then
  echo "stopping the following units:$removed" >&2
  # shellcheck disable=SC2086  # split on purpose: a list of unit names
  systemctl --user stop $removed || true
fi
echo "activating the configuration $system" >&2
mkdir -p "$root/run"
ln -s "$system" "$root/run/.current-system.$$"
mv -T "$root/run/.current-system.$$" "$current"
# every activation, with the boot default at the time, for whoever audits the sandbox (the
# crash tests count the test activations of a system that was not the boot default)
boot_default=$(readlink -f "$root/nix/var/nix/profiles/system" 2>/dev/null || true)
printf '%s %s %s\n' "$action" "$system" "${boot_default:-none}" >> "$root/activations.log"

# Crash tests hold a test activation at its most fragile moment, after the system link moved
# and before any unit was restarted: NIXCOMPLY_SANDBOX_HOLD names a file to create, then the
# activation waits until it is killed.
if [ -n "${NIXCOMPLY_SANDBOX_HOLD:-}" ] && [ "$action" = test ]; then
  : > "$NIXCOMPLY_SANDBOX_HOLD"
  while :; do sleep 1; done
fi

status=0
if [ -n "$systemd" ]; then
  systemctl --user daemon-reload
  for u in $changed; do
    case "$u" in
      *.service)
        echo "restarting $u" >&2
        systemctl --user restart "$u" || true ;;
    esac
  done
  failed=$(systemctl --user list-units --state=failed --plain --no-legend | while read -r unit rest; do printf ' %s' "$unit"; done)
  if [ -n "$failed" ]; then
    echo "warning: the following units failed:$failed" >&2
    status=4
  fi
fi
if [ "$action" = switch ]; then echo "sandbox: no boot loader to update" >&2; fi
exit $status
