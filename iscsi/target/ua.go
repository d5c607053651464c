package target

import (
	"github.com/shareless/shareless/iscsi/pdu"
	"github.com/shareless/shareless/iscsi/scsi"
)

// ascBusDeviceReset is BUS DEVICE RESET FUNCTION OCCURRED (SPC-4 table
// 28), the unit attention a LOGICAL UNIT RESET or TARGET WARM RESET
// leaves on every I_T nexus (SAM-5 §6.3).
const ascBusDeviceReset scsi.AdditionalSense = 0x2903

// The session is the I_T nexus, so the target keeps the unit attentions
// that task management raises per session and LUN; the logical unit knows
// nothing of nexuses.

// raiseUnitAttention records a pending unit attention for lun.
func (s *session) raiseUnitAttention(lun pdu.LUN) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ua == nil {
		s.ua = make(map[pdu.LUN]bool)
	}
	s.ua[lun] = true
}

// takeUnitAttention reports (and clears) a pending unit attention for a
// command; INQUIRY, REPORT LUNS and REQUEST SENSE pass without reporting
// it (SPC-4 §5.14).
func (s *session) takeUnitAttention(lun pdu.LUN, cdb []byte) (scsi.Response, bool) {
	switch cdb[0] {
	case scsi.OpInquiry, scsi.OpReportLUNs, scsi.OpRequestSense:
		return scsi.Response{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ua[lun] {
		return scsi.Response{}, false
	}
	delete(s.ua, lun)
	return scsi.Response{Status: scsi.StatusCheckCondition,
		Sense: scsi.Sense{Key: scsi.SenseUnitAttention, Code: ascBusDeviceReset}.Fixed()}, true
}
