#!/usr/bin/env bash
# Installs the Debian packages banger needs on the host: QEMU (the VMM this
# host can run), mmdebstrap and e2fsprogs (to build guest images without
# mounting anything), apt/dpkg tools (to fetch the guest kernel).
set -euo pipefail
packages=(qemu-system-x86 mmdebstrap e2fsprogs uidmap ca-certificates curl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "host packages present: ${packages[*]}"
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
