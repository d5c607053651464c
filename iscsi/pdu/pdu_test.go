package pdu

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func roundTrip(t *testing.T, m Message, hd, dd bool) Message {
	t.Helper()
	var buf bytes.Buffer
	w := NewFramer(nil, &buf)
	w.SetDigests(hd, dd)
	if err := w.WriteMessage(m); err != nil {
		t.Fatalf("write %v: %v", m.Opcode(), err)
	}
	if buf.Len()%4 != 0 {
		t.Fatalf("%v: encoded length %d is not a multiple of 4", m.Opcode(), buf.Len())
	}
	r := NewFramer(&buf, nil)
	r.SetDigests(hd, dd)
	r.SetMaxRecvDataSegmentLength(1 << 20)
	got, err := r.ReadMessage()
	if err != nil {
		t.Fatalf("read %v: %v", m.Opcode(), err)
	}
	if buf.Len() != 0 {
		t.Fatalf("%v: %d bytes left unread", m.Opcode(), buf.Len())
	}
	return got
}

// TestRoundTrip checks that every opcode's fields survive encode and
// decode, with and without digests (§11, §13.1).
func TestRoundTrip(t *testing.T) {
	msgs := []Message{
		&SCSICommand{Immediate: true, Final: true, Write: true, Attr: AttrSimple, LUN: LUNFromNumber(3), ITT: 7,
			ExpectedDataLength: 4096, CmdSN: 9, ExpStatSN: 11, CDB: make([]byte, 16), Data: []byte("abc")},
		&SCSICommand{Final: true, Read: true, ITT: 8, CDB: bytes.Repeat([]byte{0xa5}, 32), BidiReadLength: 512},
		&SCSIResponse{Underflow: true, Response: ResponseCompleted, Status: 2, ITT: 7, TargetSN: TargetSN{StatSN: 1, ExpCmdSN: 2, MaxCmdSN: 3}, ExpDataSN: 4, ResidualCount: 5,
			Data: []byte{0, 3, 0x70, 0, 5}},
		&TaskMgmtRequest{Immediate: true, Function: TMFAbortTask, LUN: LUNFromNumber(1), ITT: 1, ReferencedTag: 2, CmdSN: 3, ExpStatSN: 4, RefCmdSN: 5, ExpDataSN: 6},
		&TaskMgmtResponse{Response: TMFTaskDoesNotExist, ITT: 1, TargetSN: TargetSN{StatSN: 2, ExpCmdSN: 3, MaxCmdSN: 4}},
		&DataOut{Final: true, LUN: LUNFromNumber(2), ITT: 1, TTT: 2, ExpStatSN: 3, DataSN: 4, BufferOffset: 8192, Data: []byte("hello")},
		&DataIn{Final: true, HasStatus: true, Underflow: true, Status: 0, ITT: 1, TTT: ReservedTag, TargetSN: TargetSN{StatSN: 5, ExpCmdSN: 6, MaxCmdSN: 7}, DataSN: 8, BufferOffset: 9, ResidualCount: 10, Data: []byte{1, 2, 3, 4, 5, 6, 7}},
		&R2T{LUN: LUNFromNumber(4), ITT: 1, TTT: 2, TargetSN: TargetSN{StatSN: 3, ExpCmdSN: 4, MaxCmdSN: 5}, R2TSN: 6, BufferOffset: 7, DesiredLength: 8},
		&AsyncMessage{TargetSN: TargetSN{StatSN: 1, ExpCmdSN: 2, MaxCmdSN: 3}, Event: AsyncLogoutRequest, Parameter3: 2},
		&TextRequest{Immediate: true, Final: true, ITT: 1, TTT: ReservedTag, CmdSN: 2, ExpStatSN: 3, Data: []byte("SendTargets=All\x00")},
		&TextResponse{Final: true, ITT: 1, TTT: ReservedTag, TargetSN: TargetSN{StatSN: 2, ExpCmdSN: 3, MaxCmdSN: 4}, Data: []byte("TargetName=iqn.x\x00")},
		&LoginRequest{Transit: true, CSG: StageOperational, NSG: StageFullFeature, ISID: ISID{0x80, 1, 2, 3, 4, 5}, TSIH: 0, ITT: 1, CID: 2, CmdSN: 3, ExpStatSN: 4, Data: []byte("a=b\x00")},
		&LoginResponse{Transit: true, CSG: StageOperational, NSG: StageFullFeature, ISID: ISID{0x80, 1, 2, 3, 4, 5}, TSIH: 9, ITT: 1, TargetSN: TargetSN{StatSN: 2, ExpCmdSN: 3, MaxCmdSN: 4}, StatusClass: LoginInitiatorError, StatusDetail: DetailAuthFailure},
		&LogoutRequest{Immediate: true, Reason: LogoutSession, ITT: 1, CID: 2, CmdSN: 3, ExpStatSN: 4},
		&LogoutResponse{Response: LogoutClosed, ITT: 1, TargetSN: TargetSN{StatSN: 2, ExpCmdSN: 3, MaxCmdSN: 4}, Time2Wait: 2, Time2Retain: 20},
		&SNACKRequest{Type: 1, ITT: 1, TTT: 2, ExpStatSN: 3, BegRun: 4, RunLength: 5},
		&Reject{Reason: RejectProtocolError, TargetSN: TargetSN{StatSN: 1, ExpCmdSN: 2, MaxCmdSN: 3}, DataSN: 4, Data: make([]byte, 48)},
		&NOPOut{Immediate: true, ITT: 1, TTT: ReservedTag, CmdSN: 2, ExpStatSN: 3, Data: []byte("ping")},
		&NOPIn{ITT: ReservedTag, TTT: 5, TargetSN: TargetSN{StatSN: 2, ExpCmdSN: 3, MaxCmdSN: 4}},
	}
	for _, digests := range [][2]bool{{false, false}, {true, true}, {true, false}, {false, true}} {
		for _, m := range msgs {
			got := roundTrip(t, m, digests[0], digests[1])
			if !reflect.DeepEqual(normalize(got), normalize(m)) {
				t.Errorf("digests %v: %v round trip:\n got %+v\nwant %+v", digests, m.Opcode(), got, m)
			}
		}
	}
}

// normalize makes empty and nil data segments compare equal.
func normalize(m Message) Message {
	v := reflect.ValueOf(m).Elem()
	if f := v.FieldByName("Data"); f.IsValid() && f.Len() == 0 {
		f.Set(reflect.Zero(f.Type()))
	}
	return m
}

// TestGoldenLoginRequest pins the byte layout of a Login Request (§11.12)
// against a hand-assembled header.
func TestGoldenLoginRequest(t *testing.T) {
	m := &LoginRequest{Transit: true, CSG: StageSecurity, NSG: StageOperational, ISID: ISID{0x40, 0, 0, 1, 0, 0},
		ITT: 0x10, CID: 1, CmdSN: 0x20, ExpStatSN: 0, Data: []byte("InitiatorName=iqn.i\x00")}
	var buf bytes.Buffer
	if err := NewFramer(nil, &buf).WriteMessage(m); err != nil {
		t.Fatal(err)
	}
	want := "43" + "81" + "0000" + "00" + "000014" + "400000010000" + "0000" + "00000010" + "0001" + "0000" + "00000020" + "00000000" +
		strings.Repeat("00", 16) + hex.EncodeToString([]byte("InitiatorName=iqn.i\x00"))
	if got := hex.EncodeToString(buf.Bytes()); got != want {
		t.Fatalf("login request bytes\n got %s\nwant %s", got, want)
	}
}

// TestHeaderDigestValue pins the CRC32C of a header and its LSB-first
// placement (§13.1), which libiscsi and Linux expect.
func TestHeaderDigestValue(t *testing.T) {
	var buf bytes.Buffer
	w := NewFramer(nil, &buf)
	w.SetDigests(true, false)
	if err := w.WriteMessage(&NOPOut{ITT: 1, TTT: ReservedTag}); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if len(b) != BHSLen+4 {
		t.Fatalf("length %d, want %d", len(b), BHSLen+4)
	}
	// crc32c of the 48 header bytes, computed independently with the
	// bitwise definition.
	crc := ^uint32(0)
	for _, c := range b[:BHSLen] {
		crc ^= uint32(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0x82f63b78
			} else {
				crc >>= 1
			}
		}
	}
	crc = ^crc
	got := uint32(b[48]) | uint32(b[49])<<8 | uint32(b[50])<<16 | uint32(b[51])<<24
	if got != crc {
		t.Fatalf("digest 0x%08x, want 0x%08x", got, crc)
	}
}

func TestDigestErrors(t *testing.T) {
	enc := func(hd, dd bool) []byte {
		var buf bytes.Buffer
		w := NewFramer(nil, &buf)
		w.SetDigests(hd, dd)
		if err := w.WriteMessage(&NOPOut{ITT: 1, TTT: ReservedTag, Data: []byte("data")}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	read := func(b []byte, hd, dd bool) error {
		r := NewFramer(bytes.NewReader(b), nil)
		r.SetDigests(hd, dd)
		_, err := r.ReadMessage()
		return err
	}
	b := enc(true, true)
	b[50] ^= 1 // header digest
	var ce *ConnError
	if err := read(b, true, true); !errors.As(err, &ce) {
		t.Fatalf("corrupt header digest: got %v, want ConnError", err)
	}
	b = enc(true, true)
	b[len(b)-1] ^= 1 // data digest
	var pe *PDUError
	if err := read(b, true, true); !errors.As(err, &pe) || pe.Reason != RejectDataDigest {
		t.Fatalf("corrupt data digest: got %v, want PDUError with reason data digest", err)
	}
	if pe.Header.Opcode() != OpNOPOut || pe.Header.ITT() != 1 {
		t.Fatalf("rejected header not kept: %v itt %d", pe.Header.Opcode(), pe.Header.ITT())
	}
}

// TestOversizedDataSegment checks that a segment above
// MaxRecvDataSegmentLength is skipped, not allocated, and the next PDU is
// read normally.
func TestOversizedDataSegment(t *testing.T) {
	var buf bytes.Buffer
	w := NewFramer(nil, &buf)
	if err := w.WriteMessage(&NOPOut{ITT: 1, TTT: ReservedTag, Data: make([]byte, 9000)}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessage(&NOPOut{ITT: 2, TTT: ReservedTag}); err != nil {
		t.Fatal(err)
	}
	r := NewFramer(&buf, nil)
	_, err := r.ReadMessage()
	var pe *PDUError
	if !errors.As(err, &pe) || pe.Reason != RejectProtocolError {
		t.Fatalf("got %v, want protocol-error PDUError", err)
	}
	m, err := r.ReadMessage()
	if err != nil || m.(*NOPOut).ITT != 2 {
		t.Fatalf("next PDU: %v %v", m, err)
	}
}

func TestTruncated(t *testing.T) {
	var buf bytes.Buffer
	if err := NewFramer(nil, &buf).WriteMessage(&NOPOut{ITT: 1, TTT: ReservedTag, Data: []byte("12345678")}); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	for _, n := range []int{0, 10, 47, 48, 52} {
		_, err := NewFramer(bytes.NewReader(full[:n]), nil).ReadMessage()
		var ce *ConnError
		if !errors.As(err, &ce) {
			t.Fatalf("truncated at %d: got %v, want ConnError", n, err)
		}
		if n == 0 && !errors.Is(err, io.EOF) {
			t.Fatalf("empty stream: got %v, want io.EOF", err)
		}
	}
}

func TestUnknownOpcode(t *testing.T) {
	var h BHS
	h[0] = 0x1c
	_, err := NewFramer(bytes.NewReader(h[:]), nil).ReadMessage()
	var pe *PDUError
	if !errors.As(err, &pe) || pe.Reason != RejectNotSupported {
		t.Fatalf("got %v, want not-supported PDUError", err)
	}
}

func TestLUN(t *testing.T) {
	for _, n := range []uint16{0, 1, 255, 256, 16383} {
		got, ok := LUNFromNumber(n).Number()
		if !ok || got != n {
			t.Errorf("LUN %d round trip: %d %v", n, got, ok)
		}
	}
	if LUNFromNumber(1) != 0x0001000000000000 {
		t.Errorf("LUN 1 encodes as %016x", uint64(LUNFromNumber(1)))
	}
	if _, ok := LUN(0x8001000000000000).Number(); ok {
		t.Error("logical unit addressing accepted")
	}
}

func TestText(t *testing.T) {
	kvs := []KeyValue{{"InitiatorName", "iqn.1993-08.org.debian:01:x"}, {"HeaderDigest", "CRC32C,None"}, {"X-com.example.key", ""}}
	got, err := ParseText(append(EncodeText(kvs), 0, 0))
	if err != nil || !reflect.DeepEqual(got, kvs) {
		t.Fatalf("ParseText = %v, %v", got, err)
	}
	for _, bad := range []string{"novalue\x00", "=x\x00", "a=b", "k\x01=v\x00", strings.Repeat("k", 64) + "=v\x00"} {
		if _, err := ParseText([]byte(bad)); err == nil {
			t.Errorf("ParseText(%q) accepted", bad)
		}
	}
}

// FuzzReadMessage feeds arbitrary bytes to the decoder: it must return a
// message or an error, never panic, and a decoded message must re-encode.
func FuzzReadMessage(f *testing.F) {
	for _, m := range []Message{
		&SCSICommand{Final: true, Read: true, CDB: make([]byte, 16), ExpectedDataLength: 512},
		&LoginRequest{Transit: true, NSG: 1, Data: []byte("InitiatorName=iqn.x\x00")},
		&DataOut{Final: true, Data: []byte{1, 2, 3}},
		&SCSIResponse{Data: []byte{0, 2, 0x70, 0}},
	} {
		var buf bytes.Buffer
		if err := NewFramer(nil, &buf).WriteMessage(m); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes(), false)
		f.Add(buf.Bytes(), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, digests bool) {
		r := NewFramer(bytes.NewReader(b), nil)
		r.SetDigests(digests, digests)
		for range 4 {
			m, err := r.ReadMessage()
			if err != nil {
				var ce *ConnError
				var pe *PDUError
				if !errors.As(err, &ce) && !errors.As(err, &pe) {
					t.Fatalf("untyped error %T: %v", err, err)
				}
				if ce != nil {
					return
				}
				continue
			}
			if err := NewFramer(nil, io.Discard).WriteMessage(m); err != nil {
				t.Fatalf("re-encode %v: %v", m.Opcode(), err)
			}
		}
	})
}

func FuzzParseText(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.x\x00SessionType=Discovery\x00"))
	f.Add([]byte("CHAP_A=5\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kvs, err := ParseText(b)
		if err != nil {
			return
		}
		again, err := ParseText(EncodeText(kvs))
		if err != nil || !reflect.DeepEqual(again, kvs) {
			t.Fatalf("re-parse: %v %v", again, err)
		}
	})
}

// TestDataBuffer: a segment read into a caller's buffer arrives there,
// with padding and the data digest still consumed and checked (§13.1).
func TestDataBuffer(t *testing.T) {
	for _, dd := range []bool{false, true} {
		var buf bytes.Buffer
		w := NewFramer(nil, &buf)
		w.SetDigests(true, dd)
		payload := []byte("seven b") // 7 bytes: one byte of padding
		w.WriteMessage(&DataIn{ITT: 1, BufferOffset: 3, Data: payload})
		w.WriteMessage(&NOPIn{ITT: 2, TTT: ReservedTag, Data: []byte("ping")})
		dst := make([]byte, 16)
		r := NewFramer(&buf, nil)
		r.SetDigests(true, dd)
		r.SetDataBuffer(func(h *BHS, n int) []byte {
			if h.Opcode() != OpDataIn {
				return nil
			}
			return dst[3 : 3+n]
		})
		m, err := r.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if d := m.(*DataIn).Data; &d[0] != &dst[3] || string(dst[3:10]) != "seven b" {
			t.Fatalf("data digest %v: segment not read into the buffer: %q", dd, dst)
		}
		if m, err := r.ReadMessage(); err != nil || string(m.(*NOPIn).Data) != "ping" {
			t.Fatalf("data digest %v: next PDU %v, %v", dd, m, err)
		}
	}
}
