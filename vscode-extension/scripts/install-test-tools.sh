#!/usr/bin/env bash
# Installs the toolchain for the VS Code extension's end-to-end test and
# packaging, outside the repository (idempotent; CI calls it on a fresh
# machine):
#   - code-server (the real VS Code server and web workbench), from npm only:
#     its postinstall would download ripgrep from GitHub, so it is done by hand
#   - playwright-core and @vscode/vsce
#   - Debian's chromium (and what code-server's native modules build with)
# Everything goes under $BANGER_VSCODE_TOOLS (default
# ~/.cache/banger-test-tools/vscode); prints what it did and how long it took.
set -euo pipefail

CS_VERSION="${CS_VERSION:-4.100.3}" # VS Code 1.100.3, the newest that runs on Node 20
PLAYWRIGHT_VERSION="${PLAYWRIGHT_VERSION:-1.65.1}"
VSCE_VERSION="${VSCE_VERSION:-3.9.2}"
DEST="${BANGER_VSCODE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/banger-test-tools/vscode}"
STAMP="$DEST/.installed-cs$CS_VERSION-pw$PLAYWRIGHT_VERSION-vsce$VSCE_VERSION"

start=$SECONDS
step() { echo "[install-test-tools] $* ($((SECONDS - start)) s)"; }

# postinstall scripts of native modules run `npx node-gyp`; a user's
# `yes=false` in ~/.npmrc would cancel them.
export npm_config_yes=true npm_config_fund=false npm_config_audit=false
# playwright-core never downloads browsers; this keeps it so.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

apt_pkgs=(build-essential python3 pkg-config libkrb5-dev ripgrep chromium git curl)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    step "apt packages installed"
fi
command -v node >/dev/null || { echo "node (>= 20) is required" >&2; exit 1; }

if [ -f "$STAMP" ] && [ -x "$DEST/code-server/node_modules/.bin/code-server" ] &&
    [ -d "$DEST/tools/node_modules/playwright-core" ] && [ -x "$DEST/tools/node_modules/.bin/vsce" ]; then
    step "already installed in $DEST"
    exit 0
fi

rm -rf "$DEST/code-server" "$DEST/tools" "$DEST"/.installed-*
mkdir -p "$DEST/code-server" "$DEST/tools"

step "playwright-core@$PLAYWRIGHT_VERSION and @vscode/vsce@$VSCE_VERSION"
cd "$DEST/tools"
echo '{"private":true}' >package.json
npm install --no-save --no-package-lock --loglevel=error \
    "playwright-core@$PLAYWRIGHT_VERSION" "@vscode/vsce@$VSCE_VERSION"

step "code-server@$CS_VERSION (scripts skipped: its postinstall downloads from GitHub)"
cd "$DEST/code-server"
echo '{"private":true}' >package.json
npm install --no-save --no-package-lock --ignore-scripts --loglevel=error "code-server@$CS_VERSION"
npm rebuild --loglevel=error argon2
cd node_modules/code-server/lib/vscode
# code-server >= 4.103 pins @parcel/watcher to a GitHub commit: use the
# registry's release instead (a no-op on 4.100.x).
node -e '
const fs = require("fs"), w = "@parcel/watcher";
const p = JSON.parse(fs.readFileSync("package.json"));
if (p.dependencies[w] && !/^\d/.test(p.dependencies[w])) {
  p.dependencies[w] = "2.5.1";
  fs.writeFileSync("package.json", JSON.stringify(p, null, 2));
  const s = JSON.parse(fs.readFileSync("npm-shrinkwrap.json"));
  s.packages[""].dependencies[w] = "2.5.1";
  delete s.packages["node_modules/" + w];
  fs.writeFileSync("npm-shrinkwrap.json", JSON.stringify(s, null, 2));
}'
step "VS Code's own dependencies"
npm install --omit=dev --ignore-scripts --loglevel=error
# @vscode/ripgrep's postinstall downloads rg unless bin/ exists: use Debian's.
mkdir -p node_modules/@vscode/ripgrep/bin
cp "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
step "building native modules (node-pty, spdlog, kerberos, ...)"
npm rebuild --loglevel=error
# The rest of code-server's postinstall.sh.
ln -sfn node_modules node_modules.asar
ln -sf code-linux.sh bin/remote-cli/code-server
ln -sf browser-linux.sh bin/helpers/browser.sh
step "built-in extensions' dependencies"
(cd extensions && npm install --omit=dev --loglevel=error)

# (not `code-server --version`: that writes ~/.config/code-server/config.yaml)
version=$(node -p 'require(process.argv[1]).version' "$DEST/code-server/node_modules/code-server/package.json")
touch "$STAMP"
step "done: code-server $version"
du -sh "$DEST/code-server" "$DEST/tools" /usr/lib/chromium 2>/dev/null || true
