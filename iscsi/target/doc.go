// Package target is the project's iSCSI target (RFC 7143): it serves
// blockdev devices as SCSI logical units to initiators such as QEMU's
// libiscsi, on the addresses it is given and nowhere else.
//
// A Target has no package-level state; a process may run several. Each
// connection is served by three kinds of goroutine: one reader that owns
// the connection's protocol state (login, the CmdSN window, R2T
// accounting, task table updates), workers that execute SCSI commands
// concurrently, and one writer that stamps sequence numbers on outgoing
// PDUs in wire order. A panic while serving a connection is recovered and
// only that connection is dropped.
//
// The target runs at ErrorRecoveryLevel 0 with one connection per session
// (MaxConnections=1): any connection failure ends the session, and the
// initiator recovers by logging in again (session reinstatement, §6.3.5).
package target
