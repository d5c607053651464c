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
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# With recommends: the suite was developed and measured with them.
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts services on install; tests run their own instances.
for svc in tgt rabbitmq-server; do
	systemctl disable --now "$svc" >/dev/null 2>&1 || true
done

cd "$(dirname "$0")/.."
go mod download
