package target

import (
	"bytes"
	"io"
	"testing"

	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/pdu"
)

// fakeRegistry knows one live session, TSIH 7.
type fakeRegistry struct{}

func (fakeRegistry) sessionExists(tsih uint16) bool     { return tsih == 7 }
func (fakeRegistry) admit(*loginResult) (uint16, error) { return 9, nil }

func loginStream(reqs ...*pdu.LoginRequest) []byte {
	var b bytes.Buffer
	f := pdu.NewFramer(nil, &b)
	for _, r := range reqs {
		f.WriteMessage(r)
	}
	return b.Bytes()
}

func text(kv ...string) []byte {
	var p []pdu.KeyValue
	for i := 0; i+1 < len(kv); i += 2 {
		p = append(p, pdu.KeyValue{Key: kv[i], Value: kv[i+1]})
	}
	return pdu.EncodeText(p)
}

// FuzzLogin drives the login state machine (RFC 7143 §6) with arbitrary
// Login Request sequences: it must never panic, every failure carries a
// status, and the full feature phase is reached only after authentication
// (or with NoAuth) and with a TSIH.
func FuzzLogin(f *testing.F) {
	ident := []string{"InitiatorName", testInitiator, "TargetName", testIQN, "SessionType", "Normal"}
	f.Add(false, loginStream(
		&pdu.LoginRequest{Transit: true, CSG: 0, NSG: 1, Data: text(append(ident, "AuthMethod", "CHAP,None")...)},
		&pdu.LoginRequest{CSG: 0, NSG: 1, Data: text("CHAP_A", "5")},
		&pdu.LoginRequest{Transit: true, CSG: 0, NSG: 1, Data: text("CHAP_N", testUser, "CHAP_R", "0x00112233445566778899aabbccddeeff", "CHAP_I", "3", "CHAP_C", "0x0102030405")},
		&pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, Data: text("HeaderDigest", "CRC32C,None", "MaxRecvDataSegmentLength", "65536", "InitialR2T", "No")},
	))
	f.Add(true, loginStream(
		&pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, Data: text(append(ident, "MaxBurstLength", "262144", "X-foo", "bar")...)},
	))
	f.Add(true, loginStream(
		&pdu.LoginRequest{Transit: true, CSG: 0, NSG: 1, Data: text("InitiatorName", testInitiator, "SessionType", "Discovery", "AuthMethod", "None")},
		&pdu.LoginRequest{Continue: true, CSG: 1, NSG: 3, Data: text("MaxRecvData")},
		&pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, Data: text("SegmentLength", "8192")},
	))
	f.Add(false, loginStream(&pdu.LoginRequest{TSIH: 7, Transit: true, CSG: 0, NSG: 3, Data: text(ident...)}))
	f.Add(false, loginStream(&pdu.LoginRequest{VersionMin: 2, CSG: 0, NSG: 1, Data: text(ident...)}))

	sec, _ := chap.NewSecret([]byte(testSecret))
	f.Fuzz(func(t *testing.T, noAuth bool, stream []byte) {
		cfg := Config{IQN: testIQN, NoAuth: noAuth, AllowInitiators: []string{testInitiator}}
		if !noAuth {
			cfg.CHAP = &chap.Credentials{User: testUser, Secret: sec}
		}
		cfg = cfg.withDefaults()
		fr := pdu.NewFramer(bytes.NewReader(stream), io.Discard)
		l := newLogin(&cfg, fakeRegistry{}, 1)
		for range 32 {
			m, err := fr.ReadMessage()
			if err != nil {
				return
			}
			req, ok := m.(*pdu.LoginRequest)
			if !ok {
				return
			}
			resp, outcome, err := l.step(req)
			switch outcome {
			case loginFailed:
				if resp.StatusClass == 0 || err == nil || resp.Transit {
					t.Fatalf("failure without status: %+v, %v", resp, err)
				}
				return
			case loginDone:
				if !l.auth.done() || resp.TSIH != 9 || !resp.Transit || resp.NSG != pdu.StageFullFeature {
					t.Fatalf("full feature phase without authentication or TSIH: %+v", resp)
				}
				if !noAuth && l.auth.state != authDone {
					t.Fatal("CHAP target admitted an initiator that did not authenticate")
				}
				return
			}
			if resp.StatusClass != 0 {
				t.Fatalf("status 0x%02x%02x on a login that goes on", resp.StatusClass, resp.StatusDetail)
			}
		}
	})
}
