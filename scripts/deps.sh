#!/usr/bin/env bash
# Installs what the demo, the tests and the benchmarks need on Debian 12:
# the real peers (tgtd, QEMU's libiscsi initiator, libiscsi's conformance
# suite, RabbitMQ, Nova's notifier library), the linters and test runners
# of the operator-facing parts (shellcheck, tox, pytest) and the Go modules.
set -euo pipefail

packages=(
	tgt                   # tgtd: the reference iSCSI target
	qemu-utils            # qemu-img, qemu-io
	qemu-block-extra      # iscsi:// support in qemu-img/qemu-io
	libiscsi-bin          # iscsi-test-cu, iscsi-ls, ...
	libiscsi-dev          # scripts/iscsi-load.c, the export benchmark's load generator
	gcc
	rabbitmq-server       # the broker Nova notifies through
	python3-oslo.messaging # Nova's own notifier
	iproute2              # ip netns for multi-host tests
	util-linux            # fallocate, etc.
	qemu-system-x86       # the lab's TCG guests (internal/lab)
	libvirt-daemon        # one libvirtd per lab host
	libvirt-daemon-driver-qemu
	libvirt-clients       # virsh: the lab's readiness checks and cleanup
	xz-utils              # unpacking the lab guest's kernel
	shellcheck            # lint of the devstack plugin and the scripts
	tox                   # tox-tests/ (Debian's tox 3, offline, site packages)
	python3-pytest        # the functional tests tox runs
	openssh-client        # ssh/scp: Nova's cold migration and resize copy disks between computes
	openssh-server        # sshd: the lab's own, one per host (internal/lab Options.SSH)
)
# The OpenStack-in-a-box of the functional tests (tox-tests/osbox): Zed
# from Debian's library packages, without recommends (python3-cinder's
# would bring Ceph); the daemons' own packages are not needed (service.py).
osbox_packages=(
	mariadb-server        # the osbox's databases
	python3-pymysql       # their driver in every service
	python3-keystone      # Keystone
	python3-keystoneclient # keystone_setup.py
	python3-placement     # Placement
	python3-nova          # Nova API, conductor, scheduler, compute (fake driver)
	python3-cinder        # Cinder API, scheduler, volume
	python3-openstackclient # the openstack CLI the tests drive
	python3-novaclient    # nova live-migration-abort
	python3-cinderclient
	python3-libvirt       # nova-compute's libvirt driver (real computes in lab hosts)
	bc                    # up.sh's phase timings
)

# missing PACKAGE...: those not installed.
missing() {
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
	done
}
export DEBIAN_FRONTEND=noninteractive
updated=
install() {
	local missing
	mapfile -t missing < <(missing "${@:2}")
	((${#missing[@]})) || return 0
	echo "deps: installing ${missing[*]}"
	[[ -n $updated ]] || apt-get update -qq
	updated=1
	apt-get install -y -qq "$1" "${missing[@]}" >/dev/null
}
# An sshd the machine already runs is how someone reaches it: leave it be,
# and stop only the one this script installs.
new_sshd=$(missing openssh-server)
# With recommends: the suite was developed and measured with them.
install --install-recommends "${packages[@]}"
install --no-install-recommends "${osbox_packages[@]}"
# Debian starts services on install; tests run their own instances.
services=(tgt rabbitmq-server mariadb)
[[ -z $new_sshd ]] || services+=(ssh ssh.socket)
for svc in "${services[@]}"; do
	systemctl disable --now "$svc" >/dev/null 2>&1 || true
done

cd "$(dirname "$0")/.."
go mod download
