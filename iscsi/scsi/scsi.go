// Package scsi is the SCSI block device that the iSCSI target serves
// (SBC-3/SPC-4, the subset real initiators use) and the sense data that
// both the target and the initiator speak. It knows nothing of iSCSI: the
// transport hands it a CDB and the whole Data-Out buffer and sends back the
// status, sense and Data-In it returns.
package scsi

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
}

// Response is the outcome of a command.
type Response struct {
	Status uint8
	// Sense is fixed-format sense data with CHECK CONDITION.
	Sense []byte
	// Data is the Data-In buffer.
	Data []byte
}
