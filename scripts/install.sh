#!/usr/bin/env bash
# Sets up everything banger needs on this host (idempotent): the Debian
# packages of every program it runs (scripts/install-host-deps.sh), then
# builds banger, bangerd and the guest agent (release) and installs the
# three side by side in $BANGER_PREFIX/bin (default ~/.cargo/bin, which
# rustup puts on PATH). Then: banger vm run --rm -- uname -a
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${BANGER_PREFIX:-${CARGO_HOME:-$HOME/.cargo}}"

scripts/install-host-deps.sh
# One target directory for both crates, so the second install reuses the
# first one's dependencies; the repository's .cargo/config.toml applies.
for crate in agent server; do
    cargo install --locked --quiet --force --path "$crate" --root "$prefix" --target-dir target
done
echo "installed banger, bangerd and banger-agent in $prefix/bin"
case ":$PATH:" in
*":$prefix/bin:"*) ;;
*) echo "note: $prefix/bin is not on PATH; add it: export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
