#!/bin/sh
# banger-init: /init of a banger guest initramfs, run by busybox sh.
#
# Assembles the guest's root file system from virtio-blk disks found by their
# serial and hands over to systemd. Contract (kept in sync with image/mod.rs):
#
#   banger.root=overlay   disk "rootfs"  = image base, ext4, mounted read-only (lower)
#                         disk "overlay" = per-VM ext4, upper/ and work/ of the overlay
#   banger.layers=N       disks "layer1".."layerN" = a derived image's layers, ext4,
#                         read-only; each one's upper/ goes between the base (below)
#                         and the VM's upper, layer N the highest
#   every mode            disk "work"    = per-VM ext4, mounted at /root
#   banger.cache=1        disk "cache" = the project's dependency cache, ext4, mounted at
#                         /var/cache/banger; its directories bind-mounted over the
#                         package managers' caches (list kept in sync with cache.rs)
#   banger.init=systemd   (default) hand over to the image's /sbin/init
#   banger.init=agent     an image with no init banger can use (an OCI image):
#                         this busybox becomes /.banger/busybox, PID 1 as busybox
#                         init, which mounts /dev/pts, /dev/shm, /run and keeps
#                         the agent running
#   /banger/banger-agent  if a later initramfs segment carries it, it replaces
#                         /usr/sbin/banger-agent in the new root
#
# On any failure: print "banger-init: <what failed>" and power off, so the VMM
# exits instead of hanging (if poweroff itself fails, init exits and the kernel
# panics; with panic=-1 and -no-reboot that ends QEMU too).

PATH=/bin
export PATH

fail() {
	echo "banger-init: $*"
	poweroff -f
	exit 1
}

mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount devtmpfs on /dev"

# Modules, one "<file>.ko <sysfs name>" per line in load order (written when
# the image was built; built-in ones are left out). A module that is already
# there is skipped.
while read -r ko name; do
	[ -n "$ko" ] || continue
	# A kernel other than the image's (banger kernel import) cannot load
	# these modules; it must have the drivers built in, and the disk and
	# agent checks below fail clearly if it does not.
	[ -d "/sys/module/$name" ] || insmod "/lib/modules/$ko" 2>/dev/null ||
		echo "banger-init: kernel module $ko not loaded (built in, or another kernel)"
done </lib/modules/load-order

root_mode=
init_mode=systemd
cache=0
layers=0
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case $arg in
	banger.root=*) root_mode=${arg#banger.root=} ;;
	banger.layers=*) layers=${arg#banger.layers=} ;;
	banger.init=*) init_mode=${arg#banger.init=} ;;
	banger.cache=*) cache=${arg#banger.cache=} ;;
	esac
done
case $layers in
[0-9]) ;;
*) fail "bad banger.layers=$layers (0-9)" ;;
esac

# disk_by_serial SERIAL: set $disk to the /dev/vdX whose virtio-blk serial is
# SERIAL; return 1 (and set $disk to "") if there is none (yet).
disk_by_serial() {
	disk=
	for serial_file in /sys/block/vd*/serial; do
		[ -r "$serial_file" ] || continue
		serial=
		read -r serial <"$serial_file"
		[ "$serial" = "$1" ] || continue
		block=${serial_file%/serial}
		disk=/dev/${block##*/}
		[ -b "$disk" ] && return 0
		disk=
	done
	return 1
}

# wait_for_disks SERIAL...: virtio-blk probing is done by the time insmod
# returns, but give slow hosts about 2 s before giving up.
wait_for_disks() {
	tries=0
	while :; do
		missing=
		for want in "$@"; do
			disk_by_serial "$want" || missing="$missing $want"
		done
		[ -z "$missing" ] && return 0
		tries=$((tries + 1))
		[ "$tries" -le 40 ] || fail "no virtio-blk disk with serial:$missing"
		sleep 0.05
	done
}

# mount_disk SERIAL DIR [OPTIONS]: mount the ext4 disk with that serial.
mount_disk() {
	disk_by_serial "$1" || fail "no virtio-blk disk with serial: $1"
	mkdir -p "$2" || fail "cannot create $2"
	mount -t ext4 -o "${3:-rw}" "$disk" "$2" || fail "cannot mount disk $1 ($disk) on $2"
}

# Read-only image base + per-VM upper disk, joined by overlayfs at /newroot.
# /mnt/lower and /mnt/upper stay mounted but unreachable after switch_root.
root_overlay() {
	wanted="rootfs overlay work"
	n=1
	while [ "$n" -le "$layers" ]; do
		wanted="$wanted layer$n"
		n=$((n + 1))
	done
	# shellcheck disable=SC2086 # one word per serial
	wait_for_disks $wanted
	mount_disk rootfs /mnt/lower ro
	# Layers stack over the base: the highest first in lowerdir.
	lower=/mnt/lower
	n=1
	while [ "$n" -le "$layers" ]; do
		mount_disk "layer$n" "/mnt/layer$n" ro
		[ -d "/mnt/layer$n/upper" ] || fail "disk layer$n has no upper/ directory"
		lower="/mnt/layer$n/upper:$lower"
		n=$((n + 1))
	done
	# discard: space the guest frees goes back to the host's sparse file.
	mount_disk overlay /mnt/upper rw,discard
	mkdir -p /mnt/upper/upper /mnt/upper/work || fail "cannot create upper/ and work/ on the overlay disk"
	# redirect_dir=on: a directory of a lower layer can be renamed (else
	# rename(2) fails with EXDEV, and e.g. dockerd and pip upgrades break).
	mount -t overlay overlay \
		-o "lowerdir=$lower,upperdir=/mnt/upper/upper,workdir=/mnt/upper/work,redirect_dir=on" /newroot ||
		fail "cannot mount the overlay root"
}

case $root_mode in
overlay) root_overlay ;;
"") fail "no banger.root= on the kernel command line; add banger.root=overlay" ;;
*) fail "unknown banger.root=$root_mode; this image supports: overlay" ;;
esac

mount_disk work /newroot/root rw,discard

if [ "$cache" = 1 ]; then
	wait_for_disks cache
	mount_disk cache /newroot/var/cache/banger rw,discard
	for pair in pip:root/.cache/pip npm:root/.npm cargo-registry:root/.cargo/registry \
		cargo-git:root/.cargo/git go-mod:root/go/pkg/mod apt:var/cache/apt/archives; do
		src=/newroot/var/cache/banger/${pair%%:*}
		dst=/newroot/${pair#*:}
		mkdir -p "$src" "$dst" && mount -o bind "$src" "$dst" ||
			fail "cannot mount the cache over /${pair#*:}"
	done
fi

if [ -f /banger/banger-agent ]; then
	mkdir -p /newroot/usr/sbin &&
	cp /banger/banger-agent /newroot/usr/sbin/banger-agent.new &&
		chmod 0755 /newroot/usr/sbin/banger-agent.new &&
		mv -f /newroot/usr/sbin/banger-agent.new /newroot/usr/sbin/banger-agent ||
		fail "cannot install /banger/banger-agent as /usr/sbin/banger-agent"
fi

# The host's own certificate authorities (possibly none): the agent adds
# them to the guest's bundle.
if [ -f /banger/host-ca.pem ]; then
	mkdir -p /newroot/usr/local/share/ca-certificates &&
		cp /banger/host-ca.pem /newroot/usr/local/share/ca-certificates/banger-host.crt ||
		fail "cannot install the host's certificate authorities"
fi

for fs in dev proc sys; do
	# A container image may lack the mount points.
	mkdir -p "/newroot/$fs" &&
		mount --move "/$fs" "/newroot/$fs" || fail "cannot move /$fs into the new root"
done

case $init_mode in
systemd)
	exec switch_root /newroot /sbin/init
	fail "switch_root to /sbin/init failed"
	;;
agent)
	[ -x /newroot/usr/sbin/banger-agent ] || fail "no agent to run (banger.init=agent needs the host's agent segment)"
	mkdir -p /newroot/.banger /newroot/etc || fail "cannot create /.banger in the new root"
	cp /bin/busybox /newroot/.banger/busybox || fail "cannot copy busybox into the new root"
	printf '%s\n' \
		'# banger: PID 1 of an image without an init of its own.' \
		'B=/.banger/busybox' \
		'$B mkdir -p /dev/pts /dev/shm /run /tmp /var/tmp' \
		'$B mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts' \
		'$B mount -t tmpfs -o mode=1777 tmpfs /dev/shm' \
		'$B mount -t tmpfs -o mode=755 tmpfs /run' \
		'$B chmod 1777 /tmp /var/tmp' \
		'$B hostname -F /etc/hostname 2>/dev/null || :' >/newroot/.banger/rc ||
		fail "cannot write /.banger/rc"
	printf '%s\n' \
		'# banger: busybox init of an image without an init of its own.' \
		'::sysinit:/.banger/busybox sh /.banger/rc' \
		'::respawn:/usr/sbin/banger-agent' \
		'::ctrlaltdel:/.banger/busybox poweroff -f' \
		'::shutdown:/.banger/busybox sync' >/newroot/etc/inittab ||
		fail "cannot write /etc/inittab"
	exec switch_root /newroot /.banger/busybox init
	fail "switch_root to busybox init failed"
	;;
*) fail "unknown banger.init=$init_mode; known: systemd, agent" ;;
esac
