#!/usr/bin/env bash
# banger's test command: builds the binaries, then runs every tier with
# cargo-nextest. A tier whose prerequisites this host lacks is reported as
# SKIPPED (its tests are filtered out and counted as skipped), never as
# passed.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --locked

filters=()
missing=()
for tool in qemu-system-x86_64 mmdebstrap mkfs.ext4 debugfs apt-get dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "guest tier SKIPPED: missing ${missing[*]} (install them: see README.md, Requirements)"
    filters+=(-E 'not package(banger-tests)')
else
    echo "guest tier: real guests under $(qemu-system-x86_64 --version | head -1)"
fi

cargo nextest run --workspace --locked --no-fail-fast "${filters[@]}" "$@"
