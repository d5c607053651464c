// Package agent runs one compute host's shareless agent: it wires the
// replicator's store, the iSCSI target and initiator, the novahook
// migration node and its AMQP consumer, the authenticated agent-to-agent
// control API (API.md) and the local API of the libvirt hook and the CLI.
//
// # Names of managed disks
//
// A managed disk belongs to one instance and has a name within it (Nova's
// file names: disk, disk.local, disk.eph0, ...; lower-case letters, digits,
// '.' and '-', the characters an IQN allows). It is served as LUN 0 of the iSCSI target
//
//	iqn.2026-11.io.shareless:<instance uuid>.<disk name>
//
// and kept in the store directory <instance uuid>.<disk name>. The name
// depends on nothing but the instance and the disk, so the domain XML
// (source name='IQN/0' on 127.0.0.1) is valid on every host: each host's
// agent serves that IQN from its own store, and libvirt needs no rewrite
// when the VM moves (so [iscsi] port is the same on every host, and
// 127.0.0.1 is one of its listen addresses). The SCSI identity (VPD 0x83 and serial) is derived
// from the same name, so the guest sees the same disk on both hosts.
//
// # CHAP and libvirt
//
// When [iscsi] chap_secret_file is set, QEMU logs in to managed disks as
// [iscsi] chap_user with the password of the libvirt secret of usage type
// iscsi named "shareless-chap" (SecretUsage); disk XML refers to it by that
// usage, so it is valid on every host. The agent defines the secret in the
// local libvirtd ([libvirt] uri) once it reaches it: libvirtd may be down
// or not installed yet when the agent starts, so the agent connects in the
// background and retries, and the hook never needs libvirt.
//
// # Adoption
//
// `shareless adopt` and `shareless release` ask the agent over the local
// API; adopt.go says what happens to Nova's files. The adoption guard
// <state_path>/guard/<domain name> records which file each managed disk
// came from; while it exists the prepare/start hook refuses domain XML
// that names one of those files. On a host without libvirtd ([libvirt] uri
// empty, e.g. Nova's fake virt driver) or for an instance without a domain
// here, `shareless adopt --file` copies raw disk files into managed disks
// instead (adoptfile.go); the agent then acts on Nova's notifications
// alone, as it always does for migrations.
//
// # Method B
//
// Under [replicator] method = remote, ensureReplicas opens replicas
// remote-only (replicator.ReplicaOptions.RemoteOnly): after the seal they
// read what the guest did not write from the source and copy nothing.
// `shareless copy-now INSTANCE` (localBackend.CopyNow) switches them to
// copying with Replica.StartCopying, which records the switch in the disk's
// metadata: a disk reopened after an agent restart keeps copying.
//
// # Who does what
//
// The novahook machine decides; the agent's Executor performs its actions,
// one instance at a time in the machine's order, and feeds the results back
// through Node.Step. Copying starts only after the source agent has sealed
// its exports (design.md §2 rule 5): the destination asks for the seal
// itself, so it does not depend on the order in which the two agents hear
// Nova's notifications.
//
// # Restarts
//
// Everything the agent must remember is on disk: the migrations in the
// node's journal under [DEFAULT] state_path, the disks and their copy
// progress in the store. At start every disk that opens without a source is
// exported again; a replica still reading from another host is reopened,
// with a new session to that host, by the actions the node repeats for its
// unfinished migrations (Node.Restart).
//
// # Peers
//
// Agents reach each other on the control API (API.md), HMAC-signed with
// the cloud's pre-shared key. A peer's address comes from [peers], else from
// Nova (its hypervisor's host_ip); its iSCSI portal is the same address with
// the port it reports.
package agent
