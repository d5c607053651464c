// Package e2e holds shareless's end-to-end tests: real libvirt live
// migrations between two lab hosts (internal/lab), each with its own
// shareless agent, libvirt hook and libvirt CHAP secret, one RabbitMQ that
// both reach, Nova's notifications sent through Nova's own notifier library
// (internal/novaemit) at the points where Nova sends them, and a TCG guest
// whose disk is a managed disk: an iSCSI network disk on 127.0.0.1 that
// each host's agent serves from its own store.
//
// The package has no code of its own; it exists for its tests, which need
// root, libvirtd, QEMU, RabbitMQ and python3-oslo.messaging (make test
// installs them, scripts/deps.sh).
package e2e
