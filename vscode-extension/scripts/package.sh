#!/usr/bin/env bash
# Builds the extension and packages it as a .vsix (default:
# dist/banger-VERSION.vsix; or the path given). Needs the extension's npm
# dependencies (npm ci) and @vscode/vsce from scripts/install-test-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${BANGER_VSCODE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/banger-test-tools/vscode}"
VSCE="$TOOLS/tools/node_modules/.bin/vsce"
if [ ! -x "$VSCE" ]; then
    echo "vsce is not installed; run: vscode-extension/scripts/install-test-tools.sh" >&2
    exit 1
fi
[ -d node_modules ] || npm ci --loglevel=error
version=$(node -p 'require("./package.json").version')
out="${1:-dist/banger-$version.vsix}"
mkdir -p "$(dirname "$out")"
# vsce runs `vscode:prepublish` (the minified build); the bundle holds the
# dependencies, so none are listed. No LICENSE file: the license is the
# repository's (package.json "license").
"$VSCE" package --no-dependencies --skip-license --allow-missing-repository --no-rewrite-relative-links --out "$out"
