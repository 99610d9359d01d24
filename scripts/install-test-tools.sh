#!/usr/bin/env bash
# Installs what the editor tiers of the tests need beyond the host packages
# (scripts/install-host-deps.sh brings tmux and node), outside the
# repository (idempotent): Neovim 0.11.4 (PyPI) for the Neovim plugin's
# tests; the MCP Python SDK (PyPI, tests/mcp/install-client.sh) for the
# agent tier's; code-server (the real VS Code 1.100.3, from npm), playwright-core,
# vsce and Debian's chromium for the VS Code extension's. scripts/test.sh
# runs it, and skips (and says so) a tier whose tools are still missing.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "neovim: $(nvim-plugin/scripts/install-nvim.sh)"
echo "mcp client: $(tests/mcp/install-client.sh)"
vscode-extension/scripts/install-test-tools.sh
