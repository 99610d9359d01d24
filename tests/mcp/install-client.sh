#!/usr/bin/env bash
# Installs the MCP client the agent tests drive `banger mcp` with: the
# official MCP Python SDK (`mcp` from PyPI) and jsonschema, at the versions
# tests/mcp/requirements.txt pins, in a dedicated virtualenv outside the
# repository:
#
#   ${BANGER_TEST_TOOLS:-$HOME/.cache/banger-test-tools}/mcp-venv
#
# and prints the path of its python (the only thing printed on stdout).
# Idempotent: a venv that already has the pinned set is kept.
#
#   install-client.sh          install when needed; print the path
#   install-client.sh --find   never install: print the path, or exit 1
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/requirements.txt"
tools="${BANGER_TEST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/banger-test-tools}"
venv="$tools/mcp-venv"
stamp="$venv/.banger-requirements"

installed() {
    [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$req" &&
        "$venv/bin/python" -c 'import mcp, jsonschema, httpx2' 2>/dev/null
}

if installed; then
    echo "$venv/bin/python"
    exit 0
fi
if [ "${1:-}" = "--find" ]; then
    echo "install-client.sh: the MCP Python SDK is not installed under $venv (run $0)" >&2
    exit 1
fi
python="${PYTHON:-}"
# Debian's (scripts/install-host-deps.sh installs python3-venv), else PATH's.
[ -n "$python" ] || { [ -x /usr/bin/python3 ] && python=/usr/bin/python3; } || python=python3
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "install-client.sh: needs python3 with venv and ensurepip (Debian: apt-get install python3-venv)" >&2
    exit 1
fi
echo "install-client.sh: installing the MCP Python SDK ($(grep '^mcp==' "$req")) into $venv" >&2
rm -rf "$venv"
mkdir -p "$tools"
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary :all: -r "$req" >&2
cp "$req" "$stamp"
if installed; then
    echo "$venv/bin/python"
else
    echo "install-client.sh: installed, but the SDK does not import under $venv" >&2
    exit 1
fi
