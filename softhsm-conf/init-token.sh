#!/usr/bin/env bash
# Create a SoftHSM2 token for Plastron (idempotent: an existing token with the label is kept).
#
#   init-token.sh [-d DIR] [-l LABEL] [-p PIN_FILE] [-s SO_PIN_FILE]
#
# or with env: SOFTHSM_DIR, TOKEN_LABEL, PIN_FILE, SO_PIN_FILE. DIR gets softhsm2.conf and
# tokens/; a PIN file that does not exist is created with a random PIN (mode 0600).
# Prints "export SOFTHSM2_CONF=<DIR>/softhsm2.conf" on stdout for eval.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${SOFTHSM_DIR:-${PWD}/.softhsm}"
label="${TOKEN_LABEL:-plastron-ca}"
pin_file="${PIN_FILE:-}"
so_pin_file="${SO_PIN_FILE:-}"

while getopts "d:l:p:s:h" opt; do
  case "$opt" in
    d) dir="$OPTARG" ;;
    l) label="$OPTARG" ;;
    p) pin_file="$OPTARG" ;;
    s) so_pin_file="$OPTARG" ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
  esac
done

mkdir -p "$dir/tokens"
dir="$(cd "$dir" && pwd)"
pin_file="${pin_file:-$dir/user.pin}"
so_pin_file="${so_pin_file:-$dir/so.pin}"
conf="$dir/softhsm2.conf"
sed "s|@TOKEN_DIR@|$dir/tokens|" "$here/softhsm2.conf.template" > "$conf"
export SOFTHSM2_CONF="$conf"

new_pin() {  # $1 = file; keeps an existing PIN
  if [ ! -s "$1" ]; then
    (umask 077; od -An -N8 -tx1 /dev/urandom | tr -d ' \n' > "$1")
  fi
  chmod 600 "$1"
}
new_pin "$pin_file"
new_pin "$so_pin_file"

if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^\s+Label:\s+${label}\s*$"; then
  echo "token '$label' already exists in $dir/tokens" >&2
else
  # PINs go through files and stdin-free args only inside this process; never echoed.
  softhsm2-util --init-token --free --label "$label" \
    --pin "$(cat "$pin_file")" --so-pin "$(cat "$so_pin_file")" > /dev/null
  echo "created token '$label' in $dir/tokens" >&2
fi
echo "export SOFTHSM2_CONF=$conf"
