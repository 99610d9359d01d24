#!/usr/bin/env bash
# Project setup figures for docs/benchmarks.md (measured, never asserted):
# `banger vm run --rm PATH -- pytest -q` of a small Python project whose
# .banger.toml has `setup = "pip install -r requirements.txt"` (pytest from
# PyPI, through --nat): the first run (the setup makes the project's image)
# and later runs (they boot it). Each run gets a fresh marker in the setup
# command, so "first" is always a first; its image is deleted at the end.
# Needs a built banger on PATH and --nat reach to PyPI.
# Usage: scripts/bench-setup.sh [RUNS]
set -euo pipefail
runs=${1:-3}
work=$(mktemp -d)
marker="bench-$$-$(date +%s)"
cleanup() {
	# The one image this run made (the newest of that name).
	banger image delete setup-bench-py >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
repo=$work/bench-py
mkdir "$repo"
cd "$repo"
git init -q
printf 'pytest\n' >requirements.txt
printf 'def test_adds():\n    assert 1 + 1 == 2\n' >test_calc.py
printf '[sandbox]\nsetup = "pip install -r requirements.txt  # %s"\nsetup-inputs = ["requirements.txt"]\nnat = true\n' "$marker" >.banger.toml
git add -A
git -c user.name=bench -c user.email=bench@example.invalid commit -qm bench

secs() {
	local t0 t1
	t0=$(date +%s%N)
	"$@" >/dev/null 2>&1
	t1=$(date +%s%N)
	awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f\n", ns / 1e9 }'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

banger vm run --rm -- true >/dev/null 2>&1 # warm: the default image exists, the daemon runs
echo "first run (setup makes the image): $(secs banger vm run --rm "$repo" -- pytest -q) s"
later=$(for _ in $(seq "$runs"); do secs banger vm run --rm "$repo" -- pytest -q; done | median)
echo "later runs (boot the project image), median of $runs: $later s"
echo "default image, no setup, same command shape: $(secs banger vm run --rm --no-project "$repo" -- true) s"
