// Package e2e holds shareless's end-to-end tests: real libvirt live
// migrations between two lab hosts (internal/lab), each with its own
// shareless agent, libvirt hook and libvirt CHAP secret, one RabbitMQ that
// both reach, Nova's notifications sent through Nova's own notifier library
// (internal/novaemit) at the points where Nova sends them, and a TCG guest
// whose disk is a managed disk: an iSCSI network disk on 127.0.0.1 that
// each host's agent serves from its own store.
//
// TestNovaLibvirt runs the same agents under real Nova: the osbox control
// plane of tox-tests/osbox joined to the lab's bridge, a real nova-compute
// with the libvirt driver ([libvirt] images_type = flat) on each host, the
// tiny guest booted from images the osbox's Glance stand-in serves, and
// every operation through the openstack CLI: live migrations of an
// adopted instance beside a block migration, the drain, the way back, an
// abort, and Nova's other operations on an adopted instance (novacloud_test.go
// brings it up).
//
// The package has no code of its own; it exists for its tests, which need
// root, libvirtd, QEMU, RabbitMQ and python3-oslo.messaging (make test
// installs them, scripts/deps.sh).
package e2e
