// Package pdu encodes and decodes iSCSI PDUs (RFC 7143 §11).
//
// The codec only wraps an io.Reader and an io.Writer, never a socket, so
// that tests can feed it golden bytes. Each opcode has its own Go type; a
// Framer reads a PDU's header first, checks its lengths against the
// negotiated limits before allocating, then reads the additional header
// segments, the data segment, padding and digests.
//
// Errors carry their failure scope: a *ConnError means the byte stream can
// no longer be trusted and the connection must be dropped; a *PDUError means
// one whole PDU was consumed but is invalid, and the peer is answered with a
// Reject (§11.17) carrying the offending header while the connection goes on.
package pdu
