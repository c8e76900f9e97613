#!/usr/bin/env bash
# Install the Debian packages xomni needs when they are missing. Root: apt-get; otherwise print the exact command.
set -euo pipefail
pkgs=("$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" = "0" ]; then
  echo "[xomni setup] installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "[xomni setup] missing Debian packages: ${missing[*]}. Run as root:  sudo sh -c '$cmd'" >&2
  exit 1
fi
