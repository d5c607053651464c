package target

import (
	"context"
	"encoding/binary"
	"fmt"
	"github.com/shareless/shareless/internal/secret"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/params"
	"github.com/shareless/shareless/iscsi/pdu"
	"github.com/shareless/shareless/iscsi/scsi"
)

// This file is a minimal raw-protocol iSCSI client built on the pdu codec,
// just enough to drive the target into the corners real initiators avoid.
// It is not an initiator: the project's initiator lives elsewhere.

const (
	testIQN       = "iqn.2026-11.org.shareless:test"
	testInitiator = "iqn.2026-11.org.shareless:client"
	testUser      = "alice"
	testSecret    = "alice-secret-123"
	testMutualU   = "target-bob"
	testMutualS   = "bob-secret-4567"
)

func chapSecret(t testing.TB, s string) secret.Secret {
	sec, err := chap.NewSecret([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// testConfig is a CHAP-protected target with one 64 MiB sparse LUN.
func testConfig(t testing.TB) Config {
	f := filepath.Join(t.TempDir(), "lun0.img")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, 64<<20); err != nil {
		t.Fatal(err)
	}
	d, err := blockdev.OpenFile(f, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return Config{
		IQN: testIQN, Listen: []string{"127.0.0.1:0"},
		LUNs:       []LUN{{Device: d, Unit: scsi.UnitConfig{ID: "test-lun-0"}}},
		CHAP:       &chap.Credentials{User: testUser, Secret: chapSecret(t, testSecret)},
		MutualCHAP: &chap.Credentials{User: testMutualU, Secret: chapSecret(t, testMutualS)},
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// startTarget serves cfg until the test ends and returns its address.
func startTarget(t testing.TB, cfg Config) (*Target, string) {
	t.Helper()
	tg, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tg.Serve(context.Background()) }()
	t.Cleanup(func() {
		tg.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return tg, tg.Addrs()[0].String()
}

type testClient struct {
	t         testing.TB
	nc        net.Conn
	fr        *pdu.Framer
	isid      pdu.ISID
	tsih      uint16
	itt       uint32
	cmdSN     uint32
	expStatSN uint32
	maxCmdSN  uint32
	maxXmit   int
	// noImmediate keeps write data out of the command PDU (for
	// ImmediateData=No); everything then goes by R2T.
	noImmediate bool
	// firstBurst > 0 sends unsolicited Data-Out up to that many bytes
	// (InitialR2T=No) after the immediate data.
	firstBurst int
}

func dial(t testing.TB, addr string) *testClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { nc.Close() })
	// The local port makes the ISID unique among live connections, so that
	// no two test connections are taken for the same session.
	n := nc.LocalAddr().(*net.TCPAddr).Port
	return &testClient{t: t, nc: nc, fr: pdu.NewFramer(nc, nc), isid: pdu.ISID{0x80, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, cmdSN: 1, maxXmit: 8192}
}

// loginOpts describe one login attempt.
type loginOpts struct {
	initiator, target string
	discovery         bool
	authMethod        string // AuthMethod offer; "" means CHAP,None
	user, secret      string
	// mutualUser/mutualSecret make the client authenticate the target.
	mutualUser, mutualSecret string
	skipSecurity             bool
	tsih                     uint16
	ops                      []pdu.KeyValue // operational offers
}

func defaultLogin() loginOpts {
	return loginOpts{initiator: testInitiator, target: testIQN, user: testUser, secret: testSecret}
}

// loginStatus is a login that ended with a non-zero status.
type loginStatus struct{ class, detail uint8 }

func (e *loginStatus) Error() string {
	return fmt.Sprintf("login status 0x%02x%02x", e.class, e.detail)
}

func (c *testClient) exchange(req *pdu.LoginRequest, kvs []pdu.KeyValue) (*pdu.LoginResponse, map[string]string, error) {
	req.ISID, req.TSIH, req.ITT, req.CmdSN, req.ExpStatSN = c.isid, c.tsih, c.itt, c.cmdSN, c.expStatSN
	req.Data = pdu.EncodeText(kvs)
	if err := c.fr.WriteMessage(req); err != nil {
		return nil, nil, err
	}
	m, err := c.fr.ReadMessage()
	if err != nil {
		return nil, nil, err
	}
	resp, ok := m.(*pdu.LoginResponse)
	if !ok {
		return nil, nil, fmt.Errorf("got %v during login", m.Opcode())
	}
	c.expStatSN = resp.StatSN + 1
	if resp.StatusClass != 0 {
		return resp, nil, &loginStatus{resp.StatusClass, resp.StatusDetail}
	}
	got, err := pdu.ParseText(resp.Data)
	if err != nil {
		return nil, nil, err
	}
	kv := map[string]string{}
	for _, p := range got {
		kv[p.Key] = p.Value
	}
	return resp, kv, nil
}

// login runs a whole login; the error is *loginStatus for a refusal.
func (c *testClient) login(o loginOpts) error {
	c.tsih = o.tsih
	ident := []pdu.KeyValue{{Key: "InitiatorName", Value: o.initiator}}
	if o.discovery {
		ident = append(ident, pdu.KeyValue{Key: "SessionType", Value: "Discovery"})
	} else if o.target != "" {
		ident = append(ident, pdu.KeyValue{Key: "TargetName", Value: o.target}, pdu.KeyValue{Key: "SessionType", Value: "Normal"})
	}
	if !o.skipSecurity {
		am := o.authMethod
		if am == "" {
			am = "CHAP,None"
		}
		resp, kv, err := c.exchange(&pdu.LoginRequest{Transit: true, CSG: 0, NSG: 1},
			append(ident, pdu.KeyValue{Key: "AuthMethod", Value: am}))
		if err != nil {
			return err
		}
		ident = nil
		if kv["AuthMethod"] == "CHAP" {
			_, kv, err = c.exchange(&pdu.LoginRequest{CSG: 0, NSG: 1}, []pdu.KeyValue{{Key: "CHAP_A", Value: "5"}})
			if err != nil {
				return err
			}
			id, _ := strconv.Atoi(kv["CHAP_I"])
			ch, err := chap.DecodeBinary(kv["CHAP_C"])
			if err != nil {
				return err
			}
			reply := []pdu.KeyValue{{Key: "CHAP_N", Value: o.user},
				{Key: "CHAP_R", Value: chap.EncodeBinary(chap.Response(byte(id), []byte(o.secret), ch))}}
			myID, myC := byte(7), []byte("client-challenge-0123")
			if o.mutualUser != "" {
				reply = append(reply, pdu.KeyValue{Key: "CHAP_I", Value: strconv.Itoa(int(myID))},
					pdu.KeyValue{Key: "CHAP_C", Value: chap.EncodeBinary(myC)})
			}
			resp, kv, err = c.exchange(&pdu.LoginRequest{Transit: true, CSG: 0, NSG: 1}, reply)
			if err != nil {
				return err
			}
			if o.mutualUser != "" {
				r, err := chap.DecodeBinary(kv["CHAP_R"])
				if err != nil || kv["CHAP_N"] != o.mutualUser || !chap.Verify(myID, []byte(o.mutualSecret), myC, r) {
					return fmt.Errorf("target failed mutual CHAP: %v %q", err, kv["CHAP_N"])
				}
			}
		}
		if !resp.Transit {
			return fmt.Errorf("target did not leave the security stage")
		}
	}
	ops := o.ops
	if ops == nil {
		ops = []pdu.KeyValue{{Key: "HeaderDigest", Value: "None"}, {Key: "DataDigest", Value: "None"},
			{Key: "MaxRecvDataSegmentLength", Value: "262144"}, {Key: "InitialR2T", Value: "No"},
			{Key: "ImmediateData", Value: "Yes"}, {Key: "MaxBurstLength", Value: "1048576"},
			{Key: "FirstBurstLength", Value: "262144"}, {Key: "ErrorRecoveryLevel", Value: "0"}}
	}
	resp, kv, err := c.exchange(&pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3}, append(ident, ops...))
	if err != nil {
		return err
	}
	if !resp.Transit || resp.NSG != 3 || resp.TSIH == 0 {
		return fmt.Errorf("login did not reach full feature phase: %+v", resp)
	}
	if v, ok := kv[params.MaxRecvDataSegmentLength]; ok {
		c.maxXmit, _ = strconv.Atoi(v)
	}
	c.tsih, c.maxCmdSN = resp.TSIH, resp.MaxCmdSN
	if kv["HeaderDigest"] == "CRC32C" || kv["DataDigest"] == "CRC32C" {
		c.fr.SetDigests(kv["HeaderDigest"] == "CRC32C", kv["DataDigest"] == "CRC32C")
	}
	c.fr.SetMaxRecvDataSegmentLength(1 << 20)
	return nil
}

func (c *testClient) mustLogin(o loginOpts) {
	c.t.Helper()
	if err := c.login(o); err != nil {
		c.t.Fatalf("login: %v", err)
	}
}

func (c *testClient) send(m pdu.Message) {
	c.t.Helper()
	if err := c.fr.WriteMessage(m); err != nil {
		c.t.Fatalf("send %v: %v", m.Opcode(), err)
	}
}

func (c *testClient) recv() pdu.Message {
	c.t.Helper()
	m, err := c.fr.ReadMessage()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	return m
}

func (c *testClient) nextITT() uint32 { c.itt++; return c.itt }

// scsiResult is the outcome of one command.
type scsiResult struct {
	status   uint8
	sense    []byte
	data     []byte
	residual uint32
	over     bool
	under    bool
}

// command runs one SCSI command to completion: immediate data up to the
// target's limit, Data-Out for each R2T, Data-In collected.
func (c *testClient) command(lun uint16, cdb []byte, out []byte, readLen uint32) scsiResult {
	c.t.Helper()
	itt := c.nextITT()
	imm := out[:min(len(out), c.maxXmit, 262144)]
	if c.noImmediate {
		imm = nil
	}
	cmd := &pdu.SCSICommand{Final: true, Attr: pdu.AttrSimple, LUN: pdu.LUNFromNumber(lun), ITT: itt,
		CmdSN: c.cmdSN, ExpStatSN: c.expStatSN, CDB: cdb, Data: imm}
	c.cmdSN++
	if out != nil {
		cmd.Write, cmd.ExpectedDataLength = true, uint32(len(out))
	} else {
		cmd.Read, cmd.ExpectedDataLength = readLen > 0, readLen
	}
	unsolEnd := min(c.firstBurst, len(out))
	cmd.Final = len(imm) >= unsolEnd
	c.send(cmd)
	for off, sn := len(imm), uint32(0); off < unsolEnd; sn++ {
		n := min(c.maxXmit, unsolEnd-off)
		c.send(&pdu.DataOut{ITT: itt, TTT: pdu.ReservedTag, LUN: cmd.LUN, BufferOffset: uint32(off), DataSN: sn,
			Final: off+n == unsolEnd, Data: out[off : off+n], ExpStatSN: c.expStatSN})
		off += n
	}
	var res scsiResult
	for {
		switch m := c.recv().(type) {
		case *pdu.R2T:
			for off := m.BufferOffset; off < m.BufferOffset+m.DesiredLength; {
				n := min(uint32(c.maxXmit), m.BufferOffset+m.DesiredLength-off)
				c.send(&pdu.DataOut{ITT: itt, TTT: m.TTT, LUN: cmd.LUN, BufferOffset: off, DataSN: (off - m.BufferOffset) / uint32(c.maxXmit),
					Final: off+n == m.BufferOffset+m.DesiredLength, Data: out[off : off+n], ExpStatSN: c.expStatSN})
				off += n
			}
		case *pdu.DataIn:
			if m.ITT != itt {
				c.t.Fatalf("Data-In for ITT %d, want %d", m.ITT, itt)
			}
			res.data = append(res.data, m.Data...)
			if m.HasStatus {
				c.expStatSN = m.StatSN + 1
				c.maxCmdSN = m.MaxCmdSN
				res.status, res.residual, res.over, res.under = m.Status, m.ResidualCount, m.Overflow, m.Underflow
				return res
			}
		case *pdu.SCSIResponse:
			c.expStatSN = m.StatSN + 1
			c.maxCmdSN = m.MaxCmdSN
			res.status, res.residual, res.over, res.under = m.Status, m.ResidualCount, m.Overflow, m.Underflow
			res.sense, _ = m.SenseData()
			return res
		case *pdu.NOPIn:
			if m.TTT != pdu.ReservedTag {
				c.send(&pdu.NOPOut{Immediate: true, ITT: pdu.ReservedTag, TTT: m.TTT, CmdSN: c.cmdSN, ExpStatSN: c.expStatSN})
			}
		default:
			c.t.Fatalf("unexpected %v while waiting for a SCSI response", m.Opcode())
		}
	}
}

func (c *testClient) logout() {
	c.t.Helper()
	c.send(&pdu.LogoutRequest{Immediate: true, ITT: c.nextITT(), CmdSN: c.cmdSN, ExpStatSN: c.expStatSN})
	for {
		switch m := c.recv().(type) {
		case *pdu.LogoutResponse:
			if m.Response != pdu.LogoutClosed {
				c.t.Fatalf("logout response %d", m.Response)
			}
			c.nc.Close()
			return
		case *pdu.NOPIn:
		default:
			c.t.Fatalf("unexpected %v while logging out", m.Opcode())
		}
	}
}

func read10(lba uint32, blocks uint16) []byte {
	cdb := make([]byte, 16)
	cdb[0] = scsi.OpRead10
	binary.BigEndian.PutUint32(cdb[2:], lba)
	binary.BigEndian.PutUint16(cdb[7:], blocks)
	return cdb
}

func write10(lba uint32, blocks uint16) []byte {
	cdb := read10(lba, blocks)
	cdb[0] = scsi.OpWrite10
	return cdb
}

func senseKey(s []byte) uint8 {
	if len(s) < 14 {
		return 0xff
	}
	return s[2] & 0xf
}

// waitPort waits until something listens on 127.0.0.1:port.
func waitPort(t testing.TB, port int) {
	t.Helper()
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on port %d", port)
}
