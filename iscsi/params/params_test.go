package params

import "testing"

// TestRespond follows the result functions of RFC 7143 §13 from the
// target's side.
func TestRespond(t *testing.T) {
	ours := Defaults()
	ours.HeaderDigest, ours.DataDigest = true, true
	ours.InitialR2T, ours.ImmediateData = false, true
	ours.MaxBurstLength, ours.FirstBurstLength = 1<<20, 1<<16
	ours.MaxRecvDataSegmentLength = 1 << 18
	ours.MaxOutstandingR2T = 8
	cases := []struct{ key, offer, answer string }{
		{HeaderDigest, "CRC32C,None", "CRC32C"},
		{DataDigest, "None,CRC32C", "None"},
		{DataDigest, "MD5", Reject},
		{InitialR2T, "Yes", "Yes"}, // OR
		{InitialR2T, "No", "No"},
		{ImmediateData, "No", "No"}, // AND
		{MaxBurstLength, "16776192", "1048576"},
		{MaxBurstLength, "4096", "4096"},
		{MaxBurstLength, "100", Reject},
		{DefaultTime2Wait, "0", "2"}, // max
		{DefaultTime2Retain, "0", "0"},
		{MaxRecvDataSegmentLength, "65536", "262144"}, // declarative
		{MaxOutstandingR2T, "1", "1"},
		{ErrorRecoveryLevel, "2", "0"},
		{IFMarker, "No", "No"},
		{"X-vendor.key", "1", NotUnderstood},
		{ImmediateData, "Maybe", Reject},
	}
	for _, c := range cases {
		var o Operational = Defaults()
		got, err := o.Respond(c.key, c.offer, &ours)
		if err != nil || got != c.answer {
			t.Errorf("Respond(%s=%s) = %q, %v; want %q", c.key, c.offer, got, err, c.answer)
		}
	}
	o := Defaults()
	if _, err := o.Respond(MaxRecvDataSegmentLength, "65536", &ours); err != nil || o.MaxXmitDataSegmentLength != 65536 {
		t.Errorf("peer's declaration not recorded: %d %v", o.MaxXmitDataSegmentLength, err)
	}
	if _, err := o.Respond(HeaderDigest, NotUnderstood, &ours); err == nil {
		t.Error("NotUnderstood as an offer accepted")
	}
}

// TestAccept checks that an initiator refuses answers the rules forbid.
func TestAccept(t *testing.T) {
	good := []struct{ key, offer, answer string }{
		{HeaderDigest, "CRC32C,None", "None"},
		{MaxBurstLength, "262144", "65536"},
		{InitialR2T, "No", "Yes"},
		{ImmediateData, "Yes", "No"},
		{DefaultTime2Wait, "2", "5"},
		{MaxRecvDataSegmentLength, "8192", "262144"},
		{"X-unknown", "1", "anything"},
	}
	for _, c := range good {
		o := Defaults()
		if err := o.Accept(c.key, c.offer, c.answer); err != nil {
			t.Errorf("Accept(%s=%s -> %s): %v", c.key, c.offer, c.answer, err)
		}
	}
	bad := []struct{ key, offer, answer string }{
		{HeaderDigest, "None", "CRC32C"},
		{MaxBurstLength, "65536", "262144"},
		{InitialR2T, "Yes", "No"},
		{ImmediateData, "No", "Yes"},
		{DefaultTime2Wait, "5", "2"},
		{ErrorRecoveryLevel, "0", Reject},
		{MaxRecvDataSegmentLength, "8192", "1"},
	}
	for _, c := range bad {
		o := Defaults()
		if err := o.Accept(c.key, c.offer, c.answer); err == nil {
			t.Errorf("Accept(%s=%s -> %s) accepted", c.key, c.offer, c.answer)
		}
	}
	o := Defaults()
	if err := o.Accept(MaxRecvDataSegmentLength, "8192", "262144"); err != nil || o.MaxXmitDataSegmentLength != 262144 {
		t.Errorf("target's MaxRecvDataSegmentLength not recorded as ours to send: %d", o.MaxXmitDataSegmentLength)
	}
}
