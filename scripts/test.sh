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
exclude=()
if [ "${#missing[@]}" -gt 0 ]; then
    echo "guest tier SKIPPED: missing ${missing[*]} (install them: see README.md, Requirements)"
    exclude+=("package(banger-tests)")
else
    echo "guest tier: real guests under $(qemu-system-x86_64 --version | head -1)"
fi

# The Firecracker tier needs a real firecracker binary, which no package
# registry ships: where banger finds none, its tests are skipped, and said so.
fc="${BANGER_FIRECRACKER:-}"
[ -n "$fc" ] || fc="${XDG_DATA_HOME:-$HOME/.local/share}/banger/bin/firecracker"
[ -x "$fc" ] || fc="$(command -v firecracker || true)"
if [ -n "$fc" ] && [ -x "$fc" ] && [ "${#missing[@]}" -eq 0 ]; then
    echo "firecracker tier: $("$fc" --version 2>/dev/null | head -1) at $fc"
    export BANGER_FIRECRACKER="$fc"
else
    echo "firecracker tier SKIPPED: no firecracker binary (set BANGER_FIRECRACKER, or run: banger system install-firecracker)"
    exclude+=("test(/^firecracker::/)")
fi

if [ "${#exclude[@]}" -gt 0 ]; then
    expr="not ($(IFS='|'; echo "${exclude[*]}" | sed 's/|/ or /g'))"
    filters+=(-E "$expr")
fi

cargo nextest run --workspace --locked --no-fail-fast "${filters[@]}" "$@"
