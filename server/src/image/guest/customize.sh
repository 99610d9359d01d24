#!/bin/sh
# Runs as the last mmdebstrap customize hook, chrooted into the new tree
# (the same way as root and in --mode=unshare), with the files to install in
# $1 (a staging directory inside the tree). Every file gets root ownership
# and an explicit mode here, whoever owned the staging copy.
#
# Trimming follows GUEST-ROOTFS-FACTS.md: the masked units and generators cut
# a TCG boot from ~8 s to ~3.6 s to multi-user.
set -eu

staging=$1
system=/etc/systemd/system

install -o root -g root -m 0755 "$staging/banger-agent" /usr/sbin/banger-agent

# The kernel's modules (staged by the build from the kernel package), so
# modprobe finds what the guest's software asks for.
if [ -d "$staging/modules" ]; then
	mkdir -p /lib/modules
	for dir in "$staging"/modules/*; do
		version=${dir##*/}
		rm -rf "/lib/modules/$version"
		cp -R "$dir" "/lib/modules/$version"
		chown -R root:root "/lib/modules/$version"
		depmod "$version"
	done
fi
install -o root -g root -m 0644 "$staging/banger-agent.service" "$system/banger-agent.service"
# Enabled by hand: systemctl inside a build chroot is not something to rely on.
mkdir -p "$system/sysinit.target.wants"
ln -sfn ../banger-agent.service "$system/sysinit.target.wants/banger-agent.service"

# Units nobody needs in a dev sandbox (list A), udev (list B: no hotplug, and
# the early agent must not wait for it), early bookkeeping (list C: the
# static device nodes' list is written by /init), and
# units that cannot apply in a banger VM (list D: no encrypted or verity
# volumes, TPM, partitions to grow, first-boot wizard, password prompts,
# fsck of an overlay root, or initrd; systemd loaded and parsed all of them,
# and what they pull in, on every boot: masked, `vm start` took ~0.1 s
# less, 6 alternating runs). systemd-logind stays: it starts once a user
# installs dbus.
for unit in \
	getty-static.service getty@.service serial-getty@.service \
	e2scrub_reap.service systemd-pstore.service modprobe@.service \
	systemd-networkd-wait-online.service \
	apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
	e2scrub_all.timer fstrim.timer \
	dev-hugepages.mount dev-mqueue.mount sys-kernel-debug.mount \
	sys-kernel-tracing.mount sys-fs-fuse-connections.mount sys-kernel-config.mount \
	systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
	systemd-udev-trigger.service systemd-udev-settle.service \
	systemd-update-utmp.service systemd-update-utmp-runlevel.service \
	systemd-journal-flush.service systemd-sysusers.service \
	systemd-modules-load.service systemd-random-seed.service \
	kmod-static-nodes.service \
	\
	cryptsetup.target cryptsetup-pre.target remote-cryptsetup.target \
	veritysetup.target veritysetup-pre.target remote-veritysetup.target \
	integritysetup.target integritysetup-pre.target \
	systemd-pcrphase.service systemd-pcrphase-sysinit.service systemd-pcrphase-initrd.service \
	systemd-repart.service systemd-firstboot.service first-boot-complete.target \
	systemd-sysext.service getty.target \
	systemd-ask-password-console.path systemd-ask-password-wall.path \
	systemd-ask-password-console.service systemd-ask-password-wall.service \
	systemd-fsck-root.service systemd-remount-fs.service systemd-fsckd.socket systemd-fsckd.service \
	initrd.target initrd-fs.target initrd-root-fs.target initrd-root-device.target \
	initrd-usr-fs.target initrd-switch-root.target initrd-cleanup.service \
	initrd-parse-etc.service initrd-switch-root.service initrd-udevadm-cleanup-db.service; do
	ln -sfn /dev/null "$system/$unit"
done

# The agent waits for systemd-tmpfiles-setup (see banger-agent.service),
# which Debian orders after journald only so that its messages reach the
# journal; they still do (journald's sockets are open before any service
# starts), and journald's own start (~0.4 s under emulation) leaves the
# path to "ready". A copy of the packaged unit, not a drop-in: a drop-in
# cannot take an After= away.
sed 's/^\(After=.*\) systemd-journald\.service/\1/' /lib/systemd/system/systemd-tmpfiles-setup.service \
	>"$system/systemd-tmpfiles-setup.service"
grep -q '^After=.*journald' "$system/systemd-tmpfiles-setup.service" &&
	{ echo "customize: systemd-tmpfiles-setup.service still waits for journald" >&2; exit 1; }
chmod 0644 "$system/systemd-tmpfiles-setup.service"

# The early setup the agent waits for forked and mounted a credentials
# directory per unit at every boot, for systemd credentials (tmpfiles.extra,
# sysctl.extra, ...) nothing passes a banger VM (an empty LoadCredential=
# drops the packaged list). And that setup goes first: systemd starts
# queued jobs in order of niceness, and at nice -10 these one-shot units
# keep the CPU over journald, which nothing a command needs waits for.
for unit in systemd-tmpfiles-setup systemd-tmpfiles-setup-dev systemd-sysctl; do
	mkdir -p "$system/$unit.service.d"
	printf '[Service]\nLoadCredential=\n' >"$system/$unit.service.d/banger-no-credentials.conf"
done
for unit in systemd-tmpfiles-setup systemd-tmpfiles-setup-dev systemd-sysctl kmod-static-nodes; do
	mkdir -p "$system/$unit.service.d"
	printf '[Service]\nNice=-10\n' >"$system/$unit.service.d/banger-first.conf"
done

# Python's binary format (run a .pyc as a program) made systemd-binfmt and
# its automount run on every boot: ~0.8 s of a 2-CPU emulated guest's time,
# for something nobody does in a sandbox. A format a user installs later
# (qemu-user-static) still gets registered as usual.
rm -f /usr/lib/binfmt.d/python3*.conf

# Every installed generator (12 in bookworm's systemd): ~0.8 s of boot.
mkdir -p /etc/systemd/system-generators
for generator in /usr/lib/systemd/system-generators/* /lib/systemd/system-generators/*; do
	[ -e "$generator" ] || continue
	ln -sfn /dev/null "/etc/systemd/system-generators/${generator##*/}"
done

mkdir -p /etc/systemd/journald.conf.d "$system/ssh.service.d" /etc/ssh/sshd_config.d
install -o root -g root -m 0644 "$staging/journald-banger.conf" /etc/systemd/journald.conf.d/banger.conf
install -o root -g root -m 0644 "$staging/pip-banger.conf" /etc/pip.conf
install -o root -g root -m 0644 "$staging/ssh-service-banger.conf" "$system/ssh.service.d/banger.conf"
install -o root -g root -m 0644 "$staging/sshd-banger.conf" /etc/ssh/sshd_config.d/banger.conf

# sshd costs nothing at boot: systemd listens on port 22 and starts one
# sshd per connection (ssh.socket, Accept=yes); `ssh NAME.vm` does not even
# need that (banger runs `sshd -i` through the agent).
rm -f /etc/systemd/system/multi-user.target.wants/ssh.service /etc/systemd/system/sshd.service
mkdir -p /etc/systemd/system/sockets.target.wants "$system/ssh@.service.d"
ln -sfn /lib/systemd/system/ssh.socket /etc/systemd/system/sockets.target.wants/ssh.socket
install -o root -g root -m 0644 "$staging/ssh-service-banger.conf" "$system/ssh@.service.d/banger.conf"

# Host keys made by openssh-server's postinst would be shared by every VM.
rm -f /etc/ssh/ssh_host_*

: >/etc/motd
for script in /etc/update-motd.d/*; do
	if [ -f "$script" ]; then rm -f "$script"; fi
done

# mmdebstrap copies the build host's hostname and resolv.conf.
echo banger >/etc/hostname
cat >/etc/hosts <<'EOF'
127.0.0.1	localhost
127.0.1.1	banger
::1	localhost ip6-localhost ip6-loopback
EOF
rm -f /etc/resolv.conf
cat >/etc/resolv.conf <<'EOF'
# banger: no name servers yet; the VM's network setup writes this file.
EOF
cat >/etc/fstab <<'EOF'
# banger: / is an overlay assembled by the initramfs, /root is the VM's work disk.
EOF
# Empty: systemd makes a fresh id on each VM's first boot.
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id

rm -rf "$staging"
