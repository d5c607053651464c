package pdu

import "fmt"

// TargetSN holds the sequence numbers every target PDU carries at the same
// place (§11.2.1): the StatSN it reports (meaningful only where the PDU
// carries status, §4.2.2.2) and the command window ExpCmdSN..MaxCmdSN
// (§4.2.2.1). A target stamps them in wire order through Seq.
type TargetSN struct {
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

// Seq gives a target PDU's sequence numbers to whoever stamps them.
func (s *TargetSN) Seq() *TargetSN { return s }

func (s *TargetSN) put(h *BHS) {
	h.put32(24, s.StatSN)
	h.put32(28, s.ExpCmdSN)
	h.put32(32, s.MaxCmdSN)
}

func (s *TargetSN) get(h *BHS) {
	s.StatSN, s.ExpCmdSN, s.MaxCmdSN = h.u32(24), h.u32(28), h.u32(32)
}

// Message is one decoded PDU. Every opcode has its own type in this file;
// the field layouts follow RFC 7143 §11.
type Message interface {
	Opcode() Opcode
	// encode fills the opcode-specific header fields (not the lengths) and
	// returns the additional header segments.
	encode(h *BHS) (ahs []byte)
	// decode reads the header fields and takes ownership of ahs and data.
	decode(h *BHS, ahs, data []byte) error
	// payload is the data segment.
	payload() []byte
}

// TaskAttr is the task attribute of a SCSI command (§11.3.1).
type TaskAttr uint8

// Task attributes (SAM-2).
const (
	AttrUntagged TaskAttr = 0
	AttrSimple   TaskAttr = 1
	AttrOrdered  TaskAttr = 2
	AttrHeadOfQ  TaskAttr = 3
	AttrACA      TaskAttr = 4
)

// SCSICommand is a SCSI Command PDU (§11.3).
type SCSICommand struct {
	Immediate          bool
	Final              bool
	Read, Write        bool
	Attr               TaskAttr
	LUN                LUN
	ITT                uint32
	ExpectedDataLength uint32
	CmdSN, ExpStatSN   uint32
	// CDB holds the 16-byte CDB field followed by any Extended CDB AHS.
	CDB []byte
	// BidiReadLength is the Bidirectional Read Expected Data Transfer
	// Length AHS, zero when absent.
	BidiReadLength uint32
	Data           []byte
}

// AHS types (§11.2.2.1).
const (
	ahsExtendedCDB = 1
	ahsBidiRead    = 2
)

func (*SCSICommand) Opcode() Opcode    { return OpSCSICommand }
func (m *SCSICommand) payload() []byte { return m.Data }

func (m *SCSICommand) encode(h *BHS) []byte {
	h.setOpcode(OpSCSICommand, m.Immediate)
	h[1] = flag(m.Final, 0x80) | flag(m.Read, 0x40) | flag(m.Write, 0x20) | byte(m.Attr)&7
	h.putLUN(m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.ExpectedDataLength)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
	copy(h[32:48], m.CDB)
	var ahs []byte
	if len(m.CDB) > 16 {
		ext := m.CDB[16:]
		seg := make([]byte, 4+len(ext)+padLen(len(ext)))
		seg[0], seg[1] = byte((len(ext)+1)>>8), byte(len(ext)+1)
		seg[2] = ahsExtendedCDB
		copy(seg[4:], ext)
		ahs = append(ahs, seg...)
	}
	if m.BidiReadLength != 0 {
		ahs = append(ahs, 0, 5, ahsBidiRead, 0, byte(m.BidiReadLength>>24),
			byte(m.BidiReadLength>>16), byte(m.BidiReadLength>>8), byte(m.BidiReadLength))
	}
	return ahs
}

func (m *SCSICommand) decode(h *BHS, ahs, data []byte) error {
	m.Immediate = h.Immediate()
	m.Final, m.Read, m.Write = bit(h[1], 0x80), bit(h[1], 0x40), bit(h[1], 0x20)
	m.Attr = TaskAttr(h[1] & 7)
	m.LUN = h.lun()
	m.ITT = h.ITT()
	m.ExpectedDataLength = h.u32(20)
	m.CmdSN, m.ExpStatSN = h.u32(24), h.u32(28)
	m.CDB = append(make([]byte, 0, 16), h[32:48]...)
	m.Data = data
	for len(ahs) > 0 {
		if len(ahs) < 4 {
			return fmt.Errorf("truncated AHS")
		}
		// AHSLength counts the AHS-specific bytes after the 3-byte prefix.
		n := int(ahs[0])<<8 | int(ahs[1])
		end := 3 + n
		if end > len(ahs) {
			return fmt.Errorf("AHS length %d exceeds TotalAHSLength", n)
		}
		body := ahs[3:end]
		switch ahs[2] {
		case ahsExtendedCDB:
			if n < 1 {
				return fmt.Errorf("empty extended CDB AHS")
			}
			m.CDB = append(m.CDB, body[1:]...) // body[0] is reserved
		case ahsBidiRead:
			if n != 5 {
				return fmt.Errorf("bidirectional read AHS length %d, want 5", n)
			}
			m.BidiReadLength = uint32(body[1])<<24 | uint32(body[2])<<16 | uint32(body[3])<<8 | uint32(body[4])
		default:
			return fmt.Errorf("unknown AHS type %d", ahs[2])
		}
		ahs = ahs[min(len(ahs), end+padLen(end)):]
	}
	return nil
}

// Response codes of a SCSI Response (§11.4.3).
const (
	ResponseCompleted    = 0x00
	ResponseTargetFailed = 0x01
)

// SCSIResponse is a SCSI Response PDU (§11.4).
type SCSIResponse struct {
	TargetSN
	BidiOverflow, BidiUnderflow bool
	Overflow, Underflow         bool
	Response                    uint8
	Status                      uint8
	ITT                         uint32
	SNACKTag                    uint32
	ExpDataSN                   uint32
	BidiResidualCount           uint32
	ResidualCount               uint32
	// Data is SenseLength (2 bytes), sense data and response data; use
	// SenseData and SetSense to read and write it.
	Data []byte
}

func (*SCSIResponse) Opcode() Opcode    { return OpSCSIResponse }
func (m *SCSIResponse) payload() []byte { return m.Data }

func (m *SCSIResponse) encode(h *BHS) []byte {
	h.setOpcode(OpSCSIResponse, false)
	h[1] = 0x80 | flag(m.BidiOverflow, 0x10) | flag(m.BidiUnderflow, 0x08) | flag(m.Overflow, 0x04) | flag(m.Underflow, 0x02)
	h[2], h[3] = m.Response, m.Status
	h.put32(16, m.ITT)
	h.put32(20, m.SNACKTag)
	m.TargetSN.put(h)
	h.put32(36, m.ExpDataSN)
	h.put32(40, m.BidiResidualCount)
	h.put32(44, m.ResidualCount)
	return nil
}

func (m *SCSIResponse) decode(h *BHS, _, data []byte) error {
	m.BidiOverflow, m.BidiUnderflow = bit(h[1], 0x10), bit(h[1], 0x08)
	m.Overflow, m.Underflow = bit(h[1], 0x04), bit(h[1], 0x02)
	m.Response, m.Status = h[2], h[3]
	m.ITT, m.SNACKTag = h.ITT(), h.u32(20)
	m.TargetSN.get(h)
	m.ExpDataSN, m.BidiResidualCount, m.ResidualCount = h.u32(36), h.u32(40), h.u32(44)
	m.Data = data
	if _, err := m.SenseData(); err != nil {
		return err
	}
	return nil
}

// SetSense stores sense data in the data segment (§11.4.7).
func (m *SCSIResponse) SetSense(sense []byte) {
	m.Data = make([]byte, 2+len(sense))
	m.Data[0], m.Data[1] = byte(len(sense)>>8), byte(len(sense))
	copy(m.Data[2:], sense)
}

// SenseData returns the sense data carried in the data segment, if any.
func (m *SCSIResponse) SenseData() ([]byte, error) {
	if len(m.Data) == 0 {
		return nil, nil
	}
	if len(m.Data) < 2 {
		return nil, fmt.Errorf("data segment of %d bytes cannot hold SenseLength", len(m.Data))
	}
	n := int(m.Data[0])<<8 | int(m.Data[1])
	if 2+n > len(m.Data) {
		return nil, fmt.Errorf("SenseLength %d exceeds data segment of %d bytes", n, len(m.Data))
	}
	return m.Data[2 : 2+n], nil
}

// Task management functions (§11.5.1).
const (
	TMFAbortTask        = 1
	TMFAbortTaskSet     = 2
	TMFClearACA         = 3
	TMFClearTaskSet     = 4
	TMFLogicalUnitReset = 5
	TMFTargetWarmReset  = 6
	TMFTargetColdReset  = 7
	TMFTaskReassign     = 8
)

// Task management responses (§11.6.1).
const (
	TMFComplete            = 0
	TMFTaskDoesNotExist    = 1
	TMFLUNDoesNotExist     = 2
	TMFTaskStillAllegiant  = 3
	TMFReassignUnsupported = 4
	TMFNotSupported        = 5
	TMFAuthFailed          = 6
	TMFRejected            = 255
)

// TaskMgmtRequest is a Task Management Function Request PDU (§11.5).
type TaskMgmtRequest struct {
	Immediate        bool
	Function         uint8
	LUN              LUN
	ITT              uint32
	ReferencedTag    uint32
	CmdSN, ExpStatSN uint32
	RefCmdSN         uint32
	ExpDataSN        uint32
}

func (*TaskMgmtRequest) Opcode() Opcode  { return OpTaskMgmtRequest }
func (*TaskMgmtRequest) payload() []byte { return nil }

func (m *TaskMgmtRequest) encode(h *BHS) []byte {
	h.setOpcode(OpTaskMgmtRequest, m.Immediate)
	h[1] = 0x80 | m.Function&0x7f
	h.putLUN(m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.ReferencedTag)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
	h.put32(32, m.RefCmdSN)
	h.put32(36, m.ExpDataSN)
	return nil
}

func (m *TaskMgmtRequest) decode(h *BHS, _, _ []byte) error {
	m.Immediate, m.Function, m.LUN = h.Immediate(), h[1]&0x7f, h.lun()
	m.ITT, m.ReferencedTag = h.ITT(), h.u32(20)
	m.CmdSN, m.ExpStatSN, m.RefCmdSN, m.ExpDataSN = h.u32(24), h.u32(28), h.u32(32), h.u32(36)
	return nil
}

// TaskMgmtResponse is a Task Management Function Response PDU (§11.6).
type TaskMgmtResponse struct {
	TargetSN
	Response uint8
	ITT      uint32
}

func (*TaskMgmtResponse) Opcode() Opcode  { return OpTaskMgmtResponse }
func (*TaskMgmtResponse) payload() []byte { return nil }

func (m *TaskMgmtResponse) encode(h *BHS) []byte {
	h.setOpcode(OpTaskMgmtResponse, false)
	h[1], h[2] = 0x80, m.Response
	h.put32(16, m.ITT)
	m.TargetSN.put(h)
	return nil
}

func (m *TaskMgmtResponse) decode(h *BHS, _, _ []byte) error {
	m.Response, m.ITT = h[2], h.ITT()
	m.TargetSN.get(h)
	return nil
}

// DataOut is a SCSI Data-Out PDU (§11.7).
type DataOut struct {
	Final        bool
	LUN          LUN
	ITT, TTT     uint32
	ExpStatSN    uint32
	DataSN       uint32
	BufferOffset uint32
	Data         []byte
}

func (*DataOut) Opcode() Opcode    { return OpDataOut }
func (m *DataOut) payload() []byte { return m.Data }

func (m *DataOut) encode(h *BHS) []byte {
	h.setOpcode(OpDataOut, false)
	h[1] = flag(m.Final, 0x80)
	h.putLUN(m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(28, m.ExpStatSN)
	h.put32(36, m.DataSN)
	h.put32(40, m.BufferOffset)
	return nil
}

func (m *DataOut) decode(h *BHS, _, data []byte) error {
	m.Final, m.LUN, m.ITT, m.TTT = h.Final(), h.lun(), h.ITT(), h.u32(20)
	m.ExpStatSN, m.DataSN, m.BufferOffset = h.u32(28), h.u32(36), h.u32(40)
	m.Data = data
	return nil
}

// DataIn is a SCSI Data-In PDU (§11.7). With HasStatus set it also
// completes the command (phase collapse, §11.7.4).
type DataIn struct {
	TargetSN
	Final, Acknowledge  bool
	Overflow, Underflow bool
	HasStatus           bool
	Status              uint8
	LUN                 LUN
	ITT, TTT            uint32
	DataSN              uint32
	BufferOffset        uint32
	ResidualCount       uint32
	Data                []byte
}

func (*DataIn) Opcode() Opcode    { return OpDataIn }
func (m *DataIn) payload() []byte { return m.Data }

func (m *DataIn) encode(h *BHS) []byte {
	h.setOpcode(OpDataIn, false)
	h[1] = flag(m.Final, 0x80) | flag(m.Acknowledge, 0x40) | flag(m.Overflow, 0x04) | flag(m.Underflow, 0x02) | flag(m.HasStatus, 0x01)
	h[3] = m.Status
	h.putLUN(m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	m.TargetSN.put(h)
	h.put32(36, m.DataSN)
	h.put32(40, m.BufferOffset)
	h.put32(44, m.ResidualCount)
	return nil
}

func (m *DataIn) decode(h *BHS, _, data []byte) error {
	m.Final, m.Acknowledge = h.Final(), bit(h[1], 0x40)
	m.Overflow, m.Underflow, m.HasStatus = bit(h[1], 0x04), bit(h[1], 0x02), bit(h[1], 0x01)
	if m.HasStatus && !m.Final {
		return fmt.Errorf("Data-In with S bit but without F bit")
	}
	m.Status, m.LUN, m.ITT, m.TTT = h[3], h.lun(), h.ITT(), h.u32(20)
	m.TargetSN.get(h)
	m.DataSN, m.BufferOffset, m.ResidualCount = h.u32(36), h.u32(40), h.u32(44)
	m.Data = data
	return nil
}

// R2T is a Ready To Transfer PDU (§11.8).
type R2T struct {
	TargetSN
	LUN           LUN
	ITT, TTT      uint32
	R2TSN         uint32
	BufferOffset  uint32
	DesiredLength uint32
}

func (*R2T) Opcode() Opcode  { return OpR2T }
func (*R2T) payload() []byte { return nil }

func (m *R2T) encode(h *BHS) []byte {
	h.setOpcode(OpR2T, false)
	h[1] = 0x80
	h.putLUN(m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	m.TargetSN.put(h)
	h.put32(36, m.R2TSN)
	h.put32(40, m.BufferOffset)
	h.put32(44, m.DesiredLength)
	return nil
}

func (m *R2T) decode(h *BHS, _, _ []byte) error {
	m.LUN, m.ITT, m.TTT = h.lun(), h.ITT(), h.u32(20)
	m.TargetSN.get(h)
	m.R2TSN, m.BufferOffset, m.DesiredLength = h.u32(36), h.u32(40), h.u32(44)
	return nil
}

// AsyncMessage is an Asynchronous Message PDU (§11.9).
type AsyncMessage struct {
	TargetSN
	LUN                                LUN
	Event, VendorCode                  uint8
	Parameter1, Parameter2, Parameter3 uint16
	Data                               []byte
}

// Asynchronous events (§11.9.1).
const (
	AsyncSCSIEvent      = 0
	AsyncLogoutRequest  = 1
	AsyncDropConnection = 2
	AsyncDropAll        = 3
	AsyncRenegotiate    = 4
	AsyncVendor         = 255
)

func (*AsyncMessage) Opcode() Opcode    { return OpAsyncMessage }
func (m *AsyncMessage) payload() []byte { return m.Data }

func (m *AsyncMessage) encode(h *BHS) []byte {
	h.setOpcode(OpAsyncMessage, false)
	h[1] = 0x80
	h.putLUN(m.LUN)
	h.put32(16, ReservedTag)
	m.TargetSN.put(h)
	h[36], h[37] = m.Event, m.VendorCode
	h.put16(38, m.Parameter1)
	h.put16(40, m.Parameter2)
	h.put16(42, m.Parameter3)
	return nil
}

func (m *AsyncMessage) decode(h *BHS, _, data []byte) error {
	m.LUN = h.lun()
	m.TargetSN.get(h)
	m.Event, m.VendorCode = h[36], h[37]
	m.Parameter1, m.Parameter2, m.Parameter3 = h.u16(38), h.u16(40), h.u16(42)
	m.Data = data
	return nil
}

// TextRequest is a Text Request PDU (§11.10).
type TextRequest struct {
	Immediate        bool
	Final, Continue  bool
	LUN              LUN
	ITT, TTT         uint32
	CmdSN, ExpStatSN uint32
	Data             []byte
}

func (*TextRequest) Opcode() Opcode    { return OpTextRequest }
func (m *TextRequest) payload() []byte { return m.Data }

func (m *TextRequest) encode(h *BHS) []byte {
	h.setOpcode(OpTextRequest, m.Immediate)
	h[1] = flag(m.Final, 0x80) | flag(m.Continue, 0x40)
	h.putLUN(m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
	return nil
}

func (m *TextRequest) decode(h *BHS, _, data []byte) error {
	m.Immediate, m.Final, m.Continue = h.Immediate(), h.Final(), bit(h[1], 0x40)
	if m.Final && m.Continue {
		return fmt.Errorf("Text Request with both F and C bits")
	}
	m.LUN, m.ITT, m.TTT = h.lun(), h.ITT(), h.u32(20)
	m.CmdSN, m.ExpStatSN = h.u32(24), h.u32(28)
	m.Data = data
	return nil
}

// TextResponse is a Text Response PDU (§11.11).
type TextResponse struct {
	TargetSN
	Final, Continue bool
	LUN             LUN
	ITT, TTT        uint32
	Data            []byte
}

func (*TextResponse) Opcode() Opcode    { return OpTextResponse }
func (m *TextResponse) payload() []byte { return m.Data }

func (m *TextResponse) encode(h *BHS) []byte {
	h.setOpcode(OpTextResponse, false)
	h[1] = flag(m.Final, 0x80) | flag(m.Continue, 0x40)
	h.putLUN(m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	m.TargetSN.put(h)
	return nil
}

func (m *TextResponse) decode(h *BHS, _, data []byte) error {
	m.Final, m.Continue = h.Final(), bit(h[1], 0x40)
	m.LUN, m.ITT, m.TTT = h.lun(), h.ITT(), h.u32(20)
	m.TargetSN.get(h)
	m.Data = data
	return nil
}

// Login stages (§11.12.3).
const (
	StageSecurity    = 0
	StageOperational = 1
	StageFullFeature = 3
)

// ISID is the initiator part of the session identifier (§11.12.5).
type ISID [6]byte

// LoginRequest is a Login Request PDU (§11.12). It is always immediate.
type LoginRequest struct {
	Transit, Continue bool
	CSG, NSG          uint8
	VersionMax        uint8
	VersionMin        uint8
	ISID              ISID
	TSIH              uint16
	ITT               uint32
	CID               uint16
	CmdSN, ExpStatSN  uint32
	Data              []byte
}

func (*LoginRequest) Opcode() Opcode    { return OpLoginRequest }
func (m *LoginRequest) payload() []byte { return m.Data }

func (m *LoginRequest) encode(h *BHS) []byte {
	h.setOpcode(OpLoginRequest, true)
	h[1] = flag(m.Transit, 0x80) | flag(m.Continue, 0x40) | (m.CSG&3)<<2 | m.NSG&3
	h[2], h[3] = m.VersionMax, m.VersionMin
	copy(h[8:14], m.ISID[:])
	h.put16(14, m.TSIH)
	h.put32(16, m.ITT)
	h.put16(20, m.CID)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
	return nil
}

func (m *LoginRequest) decode(h *BHS, _, data []byte) error {
	m.Transit, m.Continue = bit(h[1], 0x80), bit(h[1], 0x40)
	if m.Transit && m.Continue {
		return fmt.Errorf("Login Request with both T and C bits")
	}
	m.CSG, m.NSG = (h[1]>>2)&3, h[1]&3
	m.VersionMax, m.VersionMin = h[2], h[3]
	copy(m.ISID[:], h[8:14])
	m.TSIH, m.ITT, m.CID = h.u16(14), h.ITT(), h.u16(20)
	m.CmdSN, m.ExpStatSN = h.u32(24), h.u32(28)
	m.Data = data
	return nil
}

// Login status classes and details (§11.13.5).
const (
	LoginSuccess         = 0x00
	LoginRedirection     = 0x01
	LoginInitiatorError  = 0x02
	LoginTargetError     = 0x03
	DetailAuthFailure    = 0x01 // with LoginInitiatorError
	DetailForbidden      = 0x02 // initiator not authorized for the target
	DetailNotFound       = 0x03 // target not found
	DetailRemoved        = 0x04
	DetailUnsupportedVer = 0x05
	DetailTooManyConns   = 0x06
	DetailMissingParam   = 0x07
	DetailNoSessionSpan  = 0x08
	DetailNoSession      = 0x0a // session does not exist
	DetailInvalidRequest = 0x0b // invalid request during login
	DetailTargetError    = 0x00 // with LoginTargetError
	DetailOutOfResources = 0x02 // with LoginTargetError
)

// LoginResponse is a Login Response PDU (§11.13).
type LoginResponse struct {
	TargetSN
	Transit, Continue         bool
	CSG, NSG                  uint8
	VersionMax, VersionActive uint8
	ISID                      ISID
	TSIH                      uint16
	ITT                       uint32
	StatusClass, StatusDetail uint8
	Data                      []byte
}

func (*LoginResponse) Opcode() Opcode    { return OpLoginResponse }
func (m *LoginResponse) payload() []byte { return m.Data }

func (m *LoginResponse) encode(h *BHS) []byte {
	h.setOpcode(OpLoginResponse, false)
	h[1] = flag(m.Transit, 0x80) | flag(m.Continue, 0x40) | (m.CSG&3)<<2 | m.NSG&3
	h[2], h[3] = m.VersionMax, m.VersionActive
	copy(h[8:14], m.ISID[:])
	h.put16(14, m.TSIH)
	h.put32(16, m.ITT)
	m.TargetSN.put(h)
	h[36], h[37] = m.StatusClass, m.StatusDetail
	return nil
}

func (m *LoginResponse) decode(h *BHS, _, data []byte) error {
	m.Transit, m.Continue = bit(h[1], 0x80), bit(h[1], 0x40)
	m.CSG, m.NSG = (h[1]>>2)&3, h[1]&3
	m.VersionMax, m.VersionActive = h[2], h[3]
	copy(m.ISID[:], h[8:14])
	m.TSIH, m.ITT = h.u16(14), h.ITT()
	m.TargetSN.get(h)
	m.StatusClass, m.StatusDetail = h[36], h[37]
	m.Data = data
	return nil
}

// Logout reasons (§11.14.1).
const (
	LogoutSession    = 0
	LogoutConnection = 1
	LogoutRecovery   = 2
)

// LogoutRequest is a Logout Request PDU (§11.14).
type LogoutRequest struct {
	Immediate        bool
	Reason           uint8
	ITT              uint32
	CID              uint16
	CmdSN, ExpStatSN uint32
}

func (*LogoutRequest) Opcode() Opcode  { return OpLogoutRequest }
func (*LogoutRequest) payload() []byte { return nil }

func (m *LogoutRequest) encode(h *BHS) []byte {
	h.setOpcode(OpLogoutRequest, m.Immediate)
	h[1] = 0x80 | m.Reason&0x7f
	h.put32(16, m.ITT)
	h.put16(20, m.CID)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
	return nil
}

func (m *LogoutRequest) decode(h *BHS, _, _ []byte) error {
	m.Immediate, m.Reason, m.ITT, m.CID = h.Immediate(), h[1]&0x7f, h.ITT(), h.u16(20)
	m.CmdSN, m.ExpStatSN = h.u32(24), h.u32(28)
	return nil
}

// Logout responses (§11.15.1).
const (
	LogoutClosed        = 0
	LogoutCIDNotFound   = 1
	LogoutNoRecovery    = 2
	LogoutCleanupFailed = 3
)

// LogoutResponse is a Logout Response PDU (§11.15).
type LogoutResponse struct {
	TargetSN
	Response               uint8
	ITT                    uint32
	Time2Wait, Time2Retain uint16
}

func (*LogoutResponse) Opcode() Opcode  { return OpLogoutResponse }
func (*LogoutResponse) payload() []byte { return nil }

func (m *LogoutResponse) encode(h *BHS) []byte {
	h.setOpcode(OpLogoutResponse, false)
	h[1], h[2] = 0x80, m.Response
	h.put32(16, m.ITT)
	m.TargetSN.put(h)
	h.put16(40, m.Time2Wait)
	h.put16(42, m.Time2Retain)
	return nil
}

func (m *LogoutResponse) decode(h *BHS, _, _ []byte) error {
	m.Response, m.ITT = h[2], h.ITT()
	m.TargetSN.get(h)
	m.Time2Wait, m.Time2Retain = h.u16(40), h.u16(42)
	return nil
}

// SNACKRequest is a SNACK Request PDU (§11.16). Targets at
// ErrorRecoveryLevel 0 reject it, but must still parse it.
type SNACKRequest struct {
	Type      uint8
	LUN       LUN
	ITT, TTT  uint32
	ExpStatSN uint32
	BegRun    uint32
	RunLength uint32
}

func (*SNACKRequest) Opcode() Opcode  { return OpSNACKRequest }
func (*SNACKRequest) payload() []byte { return nil }

func (m *SNACKRequest) encode(h *BHS) []byte {
	h.setOpcode(OpSNACKRequest, false)
	h[1] = 0x80 | m.Type&0x0f
	h.putLUN(m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(28, m.ExpStatSN)
	h.put32(40, m.BegRun)
	h.put32(44, m.RunLength)
	return nil
}

func (m *SNACKRequest) decode(h *BHS, _, _ []byte) error {
	m.Type, m.LUN, m.ITT, m.TTT = h[1]&0x0f, h.lun(), h.ITT(), h.u32(20)
	m.ExpStatSN, m.BegRun, m.RunLength = h.u32(28), h.u32(40), h.u32(44)
	return nil
}

// Reject reasons (§11.17.1).
const (
	RejectDataDigest       = 0x02
	RejectSNACK            = 0x03
	RejectProtocolError    = 0x04
	RejectNotSupported     = 0x05
	RejectImmediateCmd     = 0x06
	RejectTaskInProgress   = 0x07
	RejectInvalidDataAck   = 0x08
	RejectInvalidPDUField  = 0x09
	RejectLongOpReject     = 0x0a
	RejectDeprecated       = 0x0b
	RejectWaitingForLogout = 0x0c
)

// Reject is a Reject PDU (§11.17); Data holds the rejected PDU's header.
type Reject struct {
	TargetSN
	Reason uint8
	DataSN uint32
	Data   []byte
}

func (*Reject) Opcode() Opcode    { return OpReject }
func (m *Reject) payload() []byte { return m.Data }

func (m *Reject) encode(h *BHS) []byte {
	h.setOpcode(OpReject, false)
	h[1], h[2] = 0x80, m.Reason
	h.put32(16, ReservedTag)
	m.TargetSN.put(h)
	h.put32(36, m.DataSN)
	return nil
}

func (m *Reject) decode(h *BHS, _, data []byte) error {
	m.Reason = h[2]
	m.TargetSN.get(h)
	m.DataSN = h.u32(36)
	m.Data = data
	return nil
}

// NOPOut is a NOP-Out PDU (§11.18).
type NOPOut struct {
	Immediate        bool
	LUN              LUN
	ITT, TTT         uint32
	CmdSN, ExpStatSN uint32
	Data             []byte
}

func (*NOPOut) Opcode() Opcode    { return OpNOPOut }
func (m *NOPOut) payload() []byte { return m.Data }

func (m *NOPOut) encode(h *BHS) []byte {
	h.setOpcode(OpNOPOut, m.Immediate)
	h[1] = 0x80
	h.putLUN(m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
	return nil
}

func (m *NOPOut) decode(h *BHS, _, data []byte) error {
	m.Immediate, m.LUN, m.ITT, m.TTT = h.Immediate(), h.lun(), h.ITT(), h.u32(20)
	m.CmdSN, m.ExpStatSN = h.u32(24), h.u32(28)
	if m.ITT == ReservedTag && m.TTT == ReservedTag {
		return fmt.Errorf("NOP-Out with both ITT and TTT reserved")
	}
	m.Data = data
	return nil
}

// NOPIn is a NOP-In PDU (§11.19).
type NOPIn struct {
	TargetSN
	LUN      LUN
	ITT, TTT uint32
	Data     []byte
}

func (*NOPIn) Opcode() Opcode    { return OpNOPIn }
func (m *NOPIn) payload() []byte { return m.Data }

func (m *NOPIn) encode(h *BHS) []byte {
	h.setOpcode(OpNOPIn, false)
	h[1] = 0x80
	h.putLUN(m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	m.TargetSN.put(h)
	return nil
}

func (m *NOPIn) decode(h *BHS, _, data []byte) error {
	m.LUN, m.ITT, m.TTT = h.lun(), h.ITT(), h.u32(20)
	m.TargetSN.get(h)
	m.Data = data
	return nil
}

// newMessage picks the decoder for an opcode; nil for unknown opcodes.
func newMessage(op Opcode) Message {
	switch op {
	case OpNOPOut:
		return new(NOPOut)
	case OpSCSICommand:
		return new(SCSICommand)
	case OpTaskMgmtRequest:
		return new(TaskMgmtRequest)
	case OpLoginRequest:
		return new(LoginRequest)
	case OpTextRequest:
		return new(TextRequest)
	case OpDataOut:
		return new(DataOut)
	case OpLogoutRequest:
		return new(LogoutRequest)
	case OpSNACKRequest:
		return new(SNACKRequest)
	case OpNOPIn:
		return new(NOPIn)
	case OpSCSIResponse:
		return new(SCSIResponse)
	case OpTaskMgmtResponse:
		return new(TaskMgmtResponse)
	case OpLoginResponse:
		return new(LoginResponse)
	case OpTextResponse:
		return new(TextResponse)
	case OpDataIn:
		return new(DataIn)
	case OpLogoutResponse:
		return new(LogoutResponse)
	case OpR2T:
		return new(R2T)
	case OpAsyncMessage:
		return new(AsyncMessage)
	case OpReject:
		return new(Reject)
	}
	return nil
}
