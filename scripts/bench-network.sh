#!/usr/bin/env bash
# Network figures for docs/benchmarks.md (measured, never asserted):
#  - host -> guest TCP through a VM's forwarded port (its 127.66.x.y),
#  - guest -> Debian registry through pasta (--nat) and through the egress
#    proxy (--allow), beside the host itself and, as root, a bare network
#    namespace + veth + nftables masquerade (the baseline),
#  - `ssh NAME.vm -- true` and `banger vm ssh NAME -- true` latency.
# Needs a built banger on PATH (cargo build --release --bins) and --nat
# reach to deb.debian.org. Usage: scripts/bench-network.sh [RUNS]
set -euo pipefail
runs=${1:-3}
url=http://deb.debian.org/debian/dists/bookworm/main/Contents-amd64.gz
vm=bench-net-$$
work=$(mktemp -d)
cleanup() {
	banger vm delete "$vm" "$vm-allow" >/dev/null 2>&1 || true
	if [ "$(id -u)" -eq 0 ]; then
		ip netns del "bn$$" 2>/dev/null || true
		ip link del "bnh$$" 2>/dev/null || true
		nft delete table ip "bn$$" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { awk '{printf "%.1f\n", $1 / 1048576}'; }

echo "== boot with a network: see bangerd.log ('starting the vm's network' -> 'starting qemu')"
banger vm create --name "$vm" --nat >/dev/null
banger vm create --name "$vm-allow" --allow deb.debian.org >/dev/null

echo "== host -> guest, 256 MiB through $vm's forwarded port (MiB/s)"
banger vm exec "$vm" -- sh -c 'mkdir -p /srv/b && head -c 268435456 /dev/zero >/srv/b/blob && cd /srv/b && nohup python3 -m http.server 8000 >/dev/null 2>&1 &'
ip=$(banger vm ip "$vm")
for _ in $(seq 30); do curl -s -o /dev/null "http://$ip:8000/" && break; sleep 1; done
for _ in $(seq "$runs"); do
	curl -s -o /dev/null -w '%{speed_download}\n' "http://$ip:8000/blob"
done | mbps | median

fetch_in_guest() {
	banger vm exec "$1" -- curl -s -o /dev/null -w '%{speed_download}\n' "$url"
}
echo "== guest -> registry through pasta (--nat), $url (MiB/s)"
for _ in $(seq "$runs"); do fetch_in_guest "$vm"; done | mbps | median
echo "== guest -> registry through the egress proxy (--allow deb.debian.org) (MiB/s)"
for _ in $(seq "$runs"); do fetch_in_guest "$vm-allow"; done | mbps | median
echo "== host -> registry, same file (MiB/s)"
for _ in $(seq "$runs"); do curl -s -o /dev/null -w '%{speed_download}\n' "$url"; done | mbps | median

if [ "$(id -u)" -eq 0 ]; then
	echo "== baseline: a bare namespace + veth + masquerade -> registry (MiB/s)"
	ns=bn$$
	ip netns add "$ns"
	ip link add "bnh$$" type veth peer name bng
	ip link set bng netns "$ns"
	ip addr add 172.31.250.1/30 dev "bnh$$"
	ip link set "bnh$$" up
	ip -n "$ns" addr add 172.31.250.2/30 dev bng
	ip -n "$ns" link set bng up
	ip -n "$ns" link set lo up
	ip -n "$ns" route add default via 172.31.250.1
	forward=$(cat /proc/sys/net/ipv4/ip_forward)
	echo 1 >/proc/sys/net/ipv4/ip_forward
	nft add table ip "$ns"
	nft add chain ip "$ns" post '{ type nat hook postrouting priority 100; }'
	nft add rule ip "$ns" post ip saddr 172.31.250.2/32 masquerade
	for _ in $(seq "$runs"); do
		ip netns exec "$ns" curl -s -o /dev/null -w '%{speed_download}\n' "$url"
	done | mbps | median
	echo "$forward" >/proc/sys/net/ipv4/ip_forward
else
	echo "== baseline: skipped (needs root)"
fi

echo "== ssh $vm.vm -- true (ms)"
home=$work/home
mkdir -p "$home/.ssh"
# A HOME of its own for ~/.ssh/config; banger's state stays the user's.
XDG_STATE_HOME=${XDG_STATE_HOME:-$HOME/.local/state} HOME=$home banger ssh-config --install >/dev/null
for _ in $(seq "$runs"); do
	s=$(date +%s%N)
	ssh -F "$home/.ssh/config" "$vm.vm" -- true
	echo $((($(date +%s%N) - s) / 1000000))
done | median
echo "== banger vm ssh $vm -- true (ms)"
for _ in $(seq "$runs"); do
	s=$(date +%s%N)
	banger vm ssh "$vm" -- true
	echo $((($(date +%s%N) - s) / 1000000))
done | median
