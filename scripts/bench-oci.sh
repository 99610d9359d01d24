#!/usr/bin/env bash
# OCI figures for docs/benchmarks.md (measured, never asserted):
#  - pull + convert of a ~100 MB image from a registry on loopback
#    (`banger image pull`, blob cache emptied of its layers first) beside
#    `skopeo copy` of the same image to a directory;
#  - `vm run --rm -- true` of the pulled image beside the default image.
# The image is a busybox tree plus 100 MB of random bytes (does not
# compress), made with umoci. Needs a built banger on PATH and the test
# tools (docker-registry, umoci, skopeo, busybox-static).
# Usage: scripts/bench-oci.sh [RUNS]
set -euo pipefail
runs=${1:-3}
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
reg=127.0.0.1:$port
name=bench-oci-$$
cleanup() {
	banger image delete "$name" >/dev/null 2>&1 || true
	[ -n "${registry_pid:-}" ] && kill "$registry_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
cat >"$work/reg.yml" <<CFG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/data
http:
  addr: $reg
CFG
docker-registry serve "$work/reg.yml" >/dev/null 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -fs "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

cd "$work"
umoci init --layout img
umoci new --image img:big
umoci unpack --rootless --image img:big bundle >/dev/null
mkdir -p bundle/rootfs/bin bundle/rootfs/data
cp "$(command -v busybox)" bundle/rootfs/bin/busybox
ln -s busybox bundle/rootfs/bin/sh
ln -s busybox bundle/rootfs/bin/true
head -c 100000000 /dev/urandom >bundle/rootfs/data/blob
umoci repack --image img:big bundle
skopeo copy -q --dest-tls-verify=false oci:img:big "docker://$reg/bench/big:1"
layers=$(skopeo inspect --tls-verify=false "docker://$reg/bench/big:1" | grep -o 'sha256:[0-9a-f]\{64\}' | sort -u)
blobs=${XDG_CACHE_HOME:-$HOME/.cache}/banger/oci/blobs/sha256

ms() {
	local t0 t1
	t0=$(date +%s%N)
	"$@" >/dev/null 2>&1
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000000))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

banger vm run --rm -- true >/dev/null 2>&1 # warm: default image, daemon
skopeo_ms=$(for i in $(seq "$runs"); do ms skopeo copy -q --src-tls-verify=false "docker://$reg/bench/big:1" "dir:$work/copy$i"; done | median)
pull_ms=$(for _ in $(seq "$runs"); do
	banger image delete "$name" >/dev/null 2>&1 || true
	for l in $layers; do rm -f "$blobs/${l#sha256:}"; done
	ms banger image pull "$reg/bench/big:1" --name "$name"
done | median)
echo "skopeo copy to a directory, median of $runs: $skopeo_ms ms"
echo "banger image pull (fetch + apply layers + ext4), median of $runs: $pull_ms ms"
boot_default=$(for _ in $(seq "$runs"); do ms banger vm run --rm -- true; done | median)
boot_oci=$(for _ in $(seq "$runs"); do ms banger vm run --rm --image "$name" -- true; done | median)
echo "vm run --rm -- true, default image, median of $runs: $boot_default ms"
echo "vm run --rm -- true, the pulled image, median of $runs: $boot_oci ms"
