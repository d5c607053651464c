package virt

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	libvirt "github.com/digitalocean/go-libvirt"
)

// Sentinel errors. An *Error from libvirtd matches the sentinel of its
// code under errors.Is, so callers never compare message text.
var (
	// ErrNoDomain: no domain with that name or UUID (VIR_ERR_NO_DOMAIN).
	ErrNoDomain = errors.New("no such domain")
	// ErrNoSecret: no secret with that UUID or usage (VIR_ERR_NO_SECRET).
	ErrNoSecret = errors.New("no such secret")
	// ErrOperationInvalid: the operation does not fit the object's state,
	// e.g. destroying a stopped domain or pivoting without a block job
	// (VIR_ERR_OPERATION_INVALID).
	ErrOperationInvalid = errors.New("operation invalid in this state")
	// ErrOperationAborted: a job (migration, block copy) was aborted
	// (VIR_ERR_OPERATION_ABORTED).
	ErrOperationAborted = errors.New("operation aborted")
	// ErrHookFailed: a libvirt hook script refused the operation
	// (VIR_ERR_HOOK_SCRIPT_FAILED); the destination's `migrate begin`
	// hook is how shareless stops a migration it cannot serve.
	ErrHookFailed = errors.New("hook script failed")
	// ErrMigrateUnsafe: libvirt refused a migration that could corrupt a
	// disk (VIR_ERR_MIGRATE_UNSAFE).
	ErrMigrateUnsafe = errors.New("migration unsafe")

	// ErrDisconnected: the connection to libvirtd was lost before or
	// during the call. The Conn reconnects by itself; whether the
	// operation took effect in libvirtd is unknown.
	ErrDisconnected = errors.New("not connected to libvirtd")
	// ErrClosed: the Conn was closed.
	ErrClosed = errors.New("libvirt connection closed")
)

// Error is an error reported by libvirtd.
type Error struct {
	Op      string // what the adapter was doing, e.g. `lookup domain "x"`
	Code    libvirt.ErrorNumber
	Message string // libvirt's message, for people; match on Code
}

func (e *Error) Error() string {
	return fmt.Sprintf("virt: %s: %s (libvirt %s, code %d)", e.Op, e.Message, e.Code, uint32(e.Code))
}

// Is reports whether target is the sentinel for e's code.
func (e *Error) Is(target error) bool {
	s := sentinel(e.Code)
	return s != nil && s == target
}

func sentinel(code libvirt.ErrorNumber) error {
	switch code {
	case libvirt.ErrNoDomain:
		return ErrNoDomain
	case libvirt.ErrNoSecret:
		return ErrNoSecret
	case libvirt.ErrOperationInvalid:
		return ErrOperationInvalid
	case libvirt.ErrOperationAborted:
		return ErrOperationAborted
	case libvirt.ErrHookScriptFailed:
		return ErrHookFailed
	case libvirt.ErrMigrateUnsafe:
		return ErrMigrateUnsafe
	}
	return nil
}

// mapError turns what go-libvirt returns into the adapter's errors:
// libvirt errors become *Error, a lost socket becomes ErrDisconnected.
func mapError(op string, err error) error {
	if err == nil {
		return nil
	}
	var le libvirt.Error
	if errors.As(err, &le) {
		return &Error{Op: op, Code: libvirt.ErrorNumber(le.Code), Message: le.Message}
	}
	if isDisconnect(err) {
		return fmt.Errorf("virt: %s: %w (%v)", op, ErrDisconnected, err)
	}
	return fmt.Errorf("virt: %s: %w", op, err)
}

// isDisconnect reports errors by which go-libvirt says the socket is gone:
// ErrInterrupted for calls in flight, EINVAL for calls on a closed socket.
func isDisconnect(err error) bool {
	return errors.Is(err, libvirt.ErrInterrupted) || errors.Is(err, syscall.EINVAL) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}
