// Package scsi is the SCSI block device that the iSCSI target serves
// (SBC-3/SPC-4, the subset real initiators use) and the sense data that
// both the target and the initiator speak. It knows nothing of iSCSI: the
// transport hands it a CDB and the whole Data-Out buffer and sends back the
// status, sense and Data-In it returns.
//
// For the target: a LogicalUnit executes commands concurrently
// (Execute); the target answers REPORT LUNS itself (ReportLUNs) and
// commands to LUNs it lacks (UnsupportedLUN), calls Response.Release once
// the Data-In is sent, and reports residuals from Response.DataOutLength.
// Setting Command.Initiator lets it enable persistent reservations.
//
// For the initiator: CDB builders (Read16, Write16, ...), parsers of the
// parameter data they return (ParseReadCapacity16, ParseLBAStatus, ...),
// and CheckStatus, which turns status and sense into a *SenseError that
// errors.Is matches against a SenseKey or an AdditionalSense.
package scsi

import "github.com/shareless/shareless/internal/bufpool"

import "fmt"

// Status codes (SAM-5 §5.3).
const (
	StatusGood                = 0x00
	StatusCheckCondition      = 0x02
	StatusConditionMet        = 0x04
	StatusBusy                = 0x08
	StatusReservationConflict = 0x18
	StatusTaskSetFull         = 0x28
	StatusACAActive           = 0x30
	StatusTaskAborted         = 0x40
)

// Command is one SCSI command as the transport delivers it.
type Command struct {
	CDB []byte
	// Data is the complete Data-Out buffer of a command that writes.
	Data []byte
	// ExpectedDataLength is the transport's Expected Data Transfer Length;
	// Data-In beyond it is cut by the transport, which reports residuals.
	ExpectedDataLength uint32
	// Port names the target port the command arrived through, for the
	// port designators of VPD page 0x83. The zero value leaves them out.
	Port TargetPort
	// Initiator is the iSCSI initiator port name of the I_T nexus
	// (InitiatorPortName, RFC 7143 §4.2.7.1). With Port it tells
	// nexuses apart for persistent reservations; see
	// UnitConfig.PersistentReservations.
	Initiator string
}

// InitiatorPortName is the iSCSI initiator port name of a session's
// initiator, for Command.Initiator: "name,i,0x" and the ISID in twelve hex
// digits (RFC 7143 §4.2.7.1, SPC-4 §7.6.4.6).
func InitiatorPortName(name string, isid [6]byte) string {
	return fmt.Sprintf("%s,i,0x%x", name, isid[:])
}

// TargetPort identifies an iSCSI target port (SPC-4 §7.8.6, iSCSI names
// per RFC 7143 §4.2.7.1).
type TargetPort struct {
	// TargetName is the iSCSI target name (the SCSI target device name).
	TargetName string
	// TPGT is the target portal group tag; with TargetName it forms the
	// target port name "TargetName,t,0xTPGT".
	TPGT uint16
	// RelativeID is the RELATIVE TARGET PORT IDENTIFIER (non-zero).
	RelativeID uint16
}

// Response is the outcome of a command.
type Response struct {
	Status uint8
	// Sense is fixed-format sense data with CHECK CONDITION.
	Sense []byte
	// Data is the Data-In buffer.
	Data []byte
	// DataOutLength is how many Data-Out bytes the CDB asked for (for a
	// WRITE, transfer length × block size). The transport compares it with
	// the Expected Data Transfer Length to report residual overflow or
	// underflow (RFC 7143 §11.4.5); Data-Out beyond it was ignored, and a
	// write short of it wrote only the whole blocks that arrived.
	DataOutLength uint32

	// pool is where Data goes back on Release; nil when Data is not pooled.
	pool *bufpool.Pool
}

// Operation codes of the commands this package executes or builds
// (SPC-4 annex D, SBC-3 §5).
const (
	OpTestUnitReady            = 0x00
	OpRequestSense             = 0x03
	OpRead6                    = 0x08
	OpWrite6                   = 0x0a
	OpInquiry                  = 0x12
	OpModeSelect6              = 0x15
	OpModeSense6               = 0x1a
	OpStartStopUnit            = 0x1b
	OpPreventAllowMediumRemove = 0x1e
	OpReadCapacity10           = 0x25
	OpRead10                   = 0x28
	OpWrite10                  = 0x2a
	OpWriteAndVerify10         = 0x2e
	OpVerify10                 = 0x2f
	OpPreFetch10               = 0x34
	OpSynchronizeCache10       = 0x35
	OpReadDefectData10         = 0x37
	OpWriteSame10              = 0x41
	OpUnmap                    = 0x42
	OpModeSelect10             = 0x55
	OpModeSense10              = 0x5a
	OpPersistentReserveIn      = 0x5e
	OpPersistentReserveOut     = 0x5f
	OpRead16                   = 0x88
	OpCompareAndWrite          = 0x89
	OpWrite16                  = 0x8a
	OpWriteAndVerify16         = 0x8e
	OpVerify16                 = 0x8f
	OpPreFetch16               = 0x90
	OpSynchronizeCache16       = 0x91
	OpWriteSame16              = 0x93
	OpServiceActionIn16        = 0x9e
	OpReportLUNs               = 0xa0
	OpMaintenanceIn            = 0xa3
	OpRead12                   = 0xa8
	OpWrite12                  = 0xaa
	OpWriteAndVerify12         = 0xae
	OpVerify12                 = 0xaf
	OpReadDefectData12         = 0xb7
)

// Service actions (SBC-3 §5.16, §5.21; SPC-4 §6.35).
const (
	SAReadCapacity16               = 0x10 // SERVICE ACTION IN(16)
	SAGetLBAStatus                 = 0x12 // SERVICE ACTION IN(16)
	SAReportSupportedOperationCode = 0x0c // MAINTENANCE IN
)

// Release hands a pooled Data buffer back to the logical unit that
// produced it. The transport calls it once it has sent Data (READ returns
// its data in a pooled buffer to keep the hot path free of allocations);
// afterwards Data must not be used. It is a no-op for responses whose Data
// is not pooled, and calling it is optional: an unreleased buffer is
// simply garbage collected. Call it at most once per command.
func (r *Response) Release() {
	if r.pool != nil {
		r.pool.Put(r.Data)
		r.pool = nil
	}
	r.Data = nil
}
