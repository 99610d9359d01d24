#!/usr/bin/env bash
# Installs the Debian packages of every program banger and its tests run on
# the host (idempotent). The list is server/src/tool.rs's `PROGRAMS` (plus
# ca-certificates); a test (tool::tests::install_script_installs_exactly_the_list)
# fails when the two differ, and `banger doctor` names what is missing.
set -euo pipefail
packages=(qemu-system-x86 e2fsprogs git dash tar curl passt nftables mmdebstrap apt dpkg coreutils findutils util-linux uidmap cpio lz4 bsdutils procps tmux nodejs openssh-client docker-registry umoci skopeo busybox-static iproute2 python3-venv ca-certificates)
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
echo "installing host packages: ${missing[*]}"
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
