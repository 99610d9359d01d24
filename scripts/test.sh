#!/usr/bin/env bash
# banger's test command: installs what the tiers need (idempotent: host
# packages from server/src/tool.rs's list, the editor tiers' tools), builds
# the binaries, then runs every tier with cargo-nextest. A tier whose
# prerequisites this host still lacks is reported as SKIPPED (its tests are
# filtered out and counted as skipped), never as passed.
# BANGER_TEST_NO_INSTALL=1 skips the installs (a machine without apt or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${BANGER_TEST_NO_INSTALL:-0}" != 1 ]; then
    scripts/install-host-deps.sh
    scripts/install-test-tools.sh
fi

# Disk: a full run needs about 8 GB (the build, the default image and its
# snapshot, the tiers' images). Said first, so a full disk is not a mystery
# later; `banger system prune` frees what earlier runs left in the cache.
cache_home="${XDG_CACHE_HOME:-$HOME/.cache}"
mkdir -p "$cache_home"
for dir in . "$cache_home"; do
    free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
    echo "disk: $((free_kb / 1024 / 1024)) GB free for $(cd "$dir" && pwd)"
    if [ "$free_kb" -lt $((8 * 1024 * 1024)) ]; then
        echo "disk: WARNING: under 8 GB free; the run may fail for lack of space (free some: banger system prune)"
    fi
done

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

# The Neovim tier (tests/guest/nvim.rs) needs Neovim >= 0.10 and tmux.
nv="${BANGER_NVIM:-$(nvim-plugin/scripts/install-nvim.sh --find 2>/dev/null || true)}"
if [ -n "$nv" ] && command -v tmux >/dev/null 2>&1 && [ "${#missing[@]}" -eq 0 ]; then
    echo "neovim tier: $("$nv" --version | head -1) at $nv"
    export BANGER_NVIM="$nv"
else
    echo "neovim tier SKIPPED: no Neovim >= 0.10 or no tmux (install them: scripts/install-test-tools.sh, or set BANGER_NVIM)"
    exclude+=("test(/^nvim::/)")
fi

# The agent tier (tests/guest/mcp.rs) drives banger mcp with the official
# MCP Python SDK.
mcp_python="${BANGER_MCP_PYTHON:-$(tests/mcp/install-client.sh --find 2>/dev/null || true)}"
if [ -n "$mcp_python" ] && [ "${#missing[@]}" -eq 0 ]; then
    echo "mcp tier: $("$mcp_python" -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))') (Python SDK) at $mcp_python"
    export BANGER_MCP_PYTHON="$mcp_python"
else
    echo "mcp tier SKIPPED: no MCP Python SDK (install it: scripts/install-test-tools.sh, or set BANGER_MCP_PYTHON)"
    exclude+=("test(/^mcp::/)")
fi

# The VS Code extension: its unit tests (node), its .vsix, then its
# end-to-end test in a real VS Code (code-server + chromium).
if command -v npm >/dev/null 2>&1; then
    echo "vscode extension: unit tests"
    (cd vscode-extension && npm ci --loglevel=error --no-fund --no-audit && npm test --silent)
else
    echo "vscode extension unit tests SKIPPED: no node/npm"
fi
vscode_tools="${BANGER_VSCODE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/banger-test-tools/vscode}"
if [ "${#missing[@]}" -eq 0 ] && command -v node >/dev/null 2>&1 &&
    [ -x "$vscode_tools/code-server/node_modules/.bin/code-server" ] &&
    [ -d "$vscode_tools/tools/node_modules/playwright-core" ] &&
    [ -x "$vscode_tools/tools/node_modules/.bin/vsce" ] &&
    [ -x "${BANGER_CHROMIUM:-/usr/bin/chromium}" ]; then
    vscode-extension/scripts/package.sh
    echo "vscode tier: code-server $(node -p 'require(process.argv[1]).version' "$vscode_tools/code-server/node_modules/code-server/package.json") and $("${BANGER_CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null | head -1)"
else
    echo "vscode tier SKIPPED: no code-server/playwright-core/vsce/chromium (install them: scripts/install-test-tools.sh)"
    exclude+=("test(/^vscode::/)")
fi

if [ "${#exclude[@]}" -gt 0 ]; then
    expr="not ($(IFS='|'; echo "${exclude[*]}" | sed 's/|/ or /g'))"
    filters+=(-E "$expr")
fi

cargo nextest run --workspace --locked --no-fail-fast "${filters[@]}" "$@"
