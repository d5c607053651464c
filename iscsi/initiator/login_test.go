package initiator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/pdu"
)

// scriptConn is a net.Conn whose peer is a byte script: reads come from
// it, writes are collected.
type scriptConn struct {
	r   io.Reader
	out bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

var fuzzISID = pdu.ISID{0x80, 1, 2, 3, 0, 0}

// targetScript renders login responses as a target would send them.
func targetScript(t testing.TB, resps ...*pdu.LoginResponse) []byte {
	var b bytes.Buffer
	fr := pdu.NewFramer(nil, &b)
	for i, r := range resps {
		r.ISID, r.StatSN, r.ExpCmdSN, r.MaxCmdSN = fuzzISID, uint32(i), 1, 32
		if err := fr.WriteMessage(r); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func kv(pairs ...string) []byte {
	var kvs []pdu.KeyValue
	for i := 0; i+1 < len(pairs); i += 2 {
		kvs = append(kvs, pdu.KeyValue{Key: pairs[i], Value: pairs[i+1]})
	}
	return pdu.EncodeText(kvs)
}

// chapScript is a whole login with one-way CHAP (RFC 7143 §12.1.3) and
// operational negotiation, as tgtd answers it.
func chapScript(t testing.TB) []byte {
	return targetScript(t,
		&pdu.LoginResponse{Data: kv("AuthMethod", "CHAP")},
		&pdu.LoginResponse{Data: kv("CHAP_A", "5", "CHAP_I", "7", "CHAP_C", "0x00112233445566778899aabbccddeeff")},
		&pdu.LoginResponse{Transit: true, NSG: pdu.StageOperational},
		&pdu.LoginResponse{Transit: true, CSG: pdu.StageOperational, NSG: pdu.StageFullFeature, TSIH: 9,
			Data: kv("HeaderDigest", "None", "DataDigest", "None", "MaxConnections", "1", "InitialR2T", "Yes",
				"ImmediateData", "Yes", "MaxRecvDataSegmentLength", "8192", "MaxBurstLength", "262144",
				"FirstBurstLength", "65536", "DefaultTime2Wait", "2", "DefaultTime2Retain", "0",
				"MaxOutstandingR2T", "1", "DataPDUInOrder", "Yes", "DataSequenceInOrder", "Yes",
				"ErrorRecoveryLevel", "0", "TargetAlias", "disk")},
	)
}

func scriptLogin(script []byte, c Credentials) (*loginResult, error) {
	res, _, err := scriptLoginSent(script, c)
	return res, err
}

// scriptLoginSent also returns what the initiator sent.
func scriptLoginSent(script []byte, c Credentials) (*loginResult, []byte, error) {
	conn := &scriptConn{r: bytes.NewReader(script)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := loginConn(ctx, conn, pdu.NewFramer(conn, conn), &loginParams{
		initiatorName: "iqn.2026-11.io.shareless:test", targetName: "iqn.t:x", isid: fuzzISID,
		cmdSN: 1, creds: c, ours: offer(), log: slog.New(slog.DiscardHandler)})
	return res, conn.out.Bytes(), err
}

// TestLoginScript follows a scripted CHAP login through to full feature
// phase and checks the negotiated values (§5.3, §13).
func TestLoginScript(t *testing.T) {
	res, sent, err := scriptLoginSent(chapScript(t), creds(t, false))
	if err != nil {
		t.Fatal(err)
	}
	// The first request: security stage, NSG 1 without T (CHAP comes
	// first), our ISID, TSIH 0, and the leading keys (§6.3, §11.12).
	m, err := pdu.NewFramer(bytes.NewReader(sent), nil).ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	first := m.(*pdu.LoginRequest)
	wantText := "InitiatorName=iqn.2026-11.io.shareless:test\x00SessionType=Normal\x00TargetName=iqn.t:x\x00AuthMethod=CHAP,None\x00"
	if first.Transit || first.CSG != pdu.StageSecurity || first.ISID != fuzzISID || first.TSIH != 0 ||
		first.CmdSN != 1 || string(first.Data) != wantText {
		t.Errorf("first login request %+v, text %q", first, first.Data)
	}
	if bytes.Contains(sent, []byte(testSecret)) {
		t.Error("the CHAP secret went on the wire")
	}
	if res.tsih != 9 || res.op.MaxXmitDataSegmentLength != 8192 || res.op.MaxBurstLength != 262144 ||
		res.op.FirstBurstLength != 65536 || !res.op.InitialR2T || res.op.MaxRecvDataSegmentLength != 256<<10 ||
		res.targetAlias != "disk" {
		t.Errorf("negotiated %+v", res)
	}
}

// TestLoginRefusals: answers that break the negotiation rules fail the
// login (§5.3); a target that refuses us is an ErrAuth.
func TestLoginRefusals(t *testing.T) {
	full := func(kvs ...string) *pdu.LoginResponse {
		return &pdu.LoginResponse{Transit: true, CSG: pdu.StageOperational, NSG: pdu.StageFullFeature, TSIH: 1, Data: kv(kvs...)}
	}
	sec := &pdu.LoginResponse{Transit: true, NSG: pdu.StageOperational, Data: kv("AuthMethod", "None")}
	for name, tc := range map[string]struct {
		script []byte
		auth   bool
	}{
		"auth failure":           {targetScript(t, &pdu.LoginResponse{StatusClass: pdu.LoginInitiatorError, StatusDetail: pdu.DetailAuthFailure}), true},
		"AuthMethod not offered": {targetScript(t, &pdu.LoginResponse{Data: kv("AuthMethod", "SRP")}), true},
		"burst above offer":      {targetScript(t, sec, full("MaxBurstLength", "99999999")), false},
		"digest not offered":     {targetScript(t, sec, full("HeaderDigest", "CRC32C")), false},
		"ImmediateData AND":      {targetScript(t, sec, full("ImmediateData", "Maybe")), false},
		"TSIH zero":              {targetScript(t, sec, &pdu.LoginResponse{Transit: true, CSG: 1, NSG: 3}), false},
		"truncated":              {targetScript(t, sec, full("MaxBurstLength", "512"))[:100], false},
	} {
		t.Run(name, func(t *testing.T) {
			c := Credentials{}
			if tc.auth {
				c = creds(t, false)
			}
			_, err := scriptLogin(tc.script, c)
			if err == nil {
				t.Fatal("login succeeded")
			}
			if errors.Is(err, ErrAuth) != tc.auth {
				t.Errorf("errors.Is(%v, ErrAuth) = %v", err, !tc.auth)
			}
		})
	}
}

// TestMutualCHAPVerifiesTarget: with mutual CHAP the target's CHAP_R must
// answer our challenge (§12.1.3); a wrong one fails the login.
func TestMutualCHAPVerifiesTarget(t *testing.T) {
	script := targetScript(t,
		&pdu.LoginResponse{Data: kv("AuthMethod", "CHAP")},
		&pdu.LoginResponse{Data: kv("CHAP_A", "5", "CHAP_I", "7", "CHAP_C", "0x00112233445566778899aabbccddeeff")},
		&pdu.LoginResponse{Transit: true, NSG: pdu.StageOperational,
			Data: kv("CHAP_N", mutualUser, "CHAP_R", chap.EncodeBinary(make([]byte, 16)))},
	)
	_, err := scriptLogin(script, creds(t, true))
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("got %v, want ErrAuth", err)
	}
}

// FuzzLoginResponses feeds arbitrary target bytes to the login: it must
// fail or succeed, never panic or loop.
func FuzzLoginResponses(f *testing.F) {
	f.Add(chapScript(f), true)
	f.Add(targetScript(f, &pdu.LoginResponse{Transit: true, NSG: 1, Data: kv("AuthMethod", "None")},
		&pdu.LoginResponse{Transit: true, CSG: 1, NSG: 3, TSIH: 1, Continue: false, Data: kv("MaxRecvDataSegmentLength", "512", "X-Vendor", "1")}), false)
	f.Add(targetScript(f, &pdu.LoginResponse{Continue: true, Data: []byte("AuthMethod=No")},
		&pdu.LoginResponse{Data: []byte("ne\x00")}), false)
	f.Fuzz(func(t *testing.T, script []byte, useCHAP bool) {
		c := Credentials{}
		if useCHAP {
			c = creds(t, false)
		}
		res, err := scriptLogin(script, c)
		if err == nil && res.tsih == 0 {
			t.Fatal("login succeeded without a TSIH")
		}
	})
}
