package target

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/iscsi/pdu"
)

func wantStatus(t *testing.T, err error, class, detail uint8) {
	t.Helper()
	var ls *loginStatus
	if !errors.As(err, &ls) || ls.class != class || ls.detail != detail {
		t.Fatalf("login error %v, want status 0x%02x%02x", err, class, detail)
	}
}

// TestRFC7143_12_1_3_CHAPWrongSecret: a wrong CHAP response ends the
// login with "authentication failure" (0x0201), and so does a wrong user.
func TestRFC7143_12_1_3_CHAPWrongSecret(t *testing.T) {
	_, addr := startTarget(t, testConfig(t))
	o := defaultLogin()
	o.secret = "not-the-secret!"
	wantStatus(t, dial(t, addr).login(o), pdu.LoginInitiatorError, pdu.DetailAuthFailure)
	o = defaultLogin()
	o.user = "mallory"
	wantStatus(t, dial(t, addr).login(o), pdu.LoginInitiatorError, pdu.DetailAuthFailure)
	dial(t, addr).mustLogin(defaultLogin())
}

// TestRFC7143_12_1_3_MutualCHAP: the target proves it knows the mutual
// secret; a target without mutual credentials refuses the request.
func TestRFC7143_12_1_3_MutualCHAP(t *testing.T) {
	_, addr := startTarget(t, testConfig(t))
	o := defaultLogin()
	o.mutualUser, o.mutualSecret = testMutualU, testMutualS
	dial(t, addr).mustLogin(o)
	o.mutualSecret = "some-other-secret"
	if err := dial(t, addr).login(o); err == nil {
		t.Fatal("client accepted the target's mutual CHAP answer for a different secret")
	}
	cfg := testConfig(t)
	cfg.MutualCHAP = nil
	_, addr = startTarget(t, cfg)
	o.mutualSecret = testMutualS
	wantStatus(t, dial(t, addr).login(o), pdu.LoginInitiatorError, pdu.DetailAuthFailure)
}

// TestRFC7143_12_NoAuthRefused: without NoAuth an initiator cannot skip
// authentication, neither by offering AuthMethod=None nor by starting in
// the operational stage.
func TestRFC7143_12_NoAuthRefused(t *testing.T) {
	_, addr := startTarget(t, testConfig(t))
	o := defaultLogin()
	o.authMethod = "None"
	wantStatus(t, dial(t, addr).login(o), pdu.LoginInitiatorError, pdu.DetailAuthFailure)
	o = defaultLogin()
	o.skipSecurity = true
	wantStatus(t, dial(t, addr).login(o), pdu.LoginInitiatorError, pdu.DetailAuthFailure)

	cfg := testConfig(t)
	cfg.CHAP, cfg.MutualCHAP, cfg.NoAuth = nil, nil, true
	_, addr = startTarget(t, cfg)
	o = defaultLogin()
	o.authMethod = "None"
	dial(t, addr).mustLogin(o)
	o.skipSecurity = true
	dial(t, addr).mustLogin(o)
}

// TestConfigRequiresAuth: a target without credentials must say NoAuth.
func TestConfigRequiresAuth(t *testing.T) {
	cfg := testConfig(t)
	cfg.CHAP, cfg.MutualCHAP = nil, nil
	if _, err := New(cfg); err == nil {
		t.Fatal("target without CHAP and without NoAuth was created")
	}
}

// TestACL: an initiator outside the allow-list sees nothing in SendTargets
// discovery and its login is "forbidden" (0x0202); an allowed one sees the
// target at the portal it connected to.
func TestACL(t *testing.T) {
	cfg := testConfig(t)
	cfg.AllowInitiators = []string{testInitiator}
	_, addr := startTarget(t, cfg)

	discover := func(initiator string) []byte {
		c := dial(t, addr)
		o := defaultLogin()
		o.initiator, o.discovery = initiator, true
		c.mustLogin(o)
		c.send(&pdu.TextRequest{Immediate: true, Final: true, ITT: c.nextITT(), TTT: pdu.ReservedTag,
			CmdSN: c.cmdSN, ExpStatSN: c.expStatSN, Data: pdu.EncodeText([]pdu.KeyValue{{Key: "SendTargets", Value: "All"}})})
		resp, ok := c.recv().(*pdu.TextResponse)
		if !ok || !resp.Final {
			t.Fatalf("SendTargets answered with %+v", resp)
		}
		c.logout()
		return resp.Data
	}
	want := pdu.EncodeText([]pdu.KeyValue{{Key: "TargetName", Value: testIQN}, {Key: "TargetAddress", Value: addr + ",1"}})
	if got := discover(testInitiator); !bytes.Equal(got, want) {
		t.Errorf("allowed initiator discovered %q, want %q", got, want)
	}
	if got := discover("iqn.2026-11.org.example:stranger"); len(got) != 0 {
		t.Errorf("initiator outside the ACL discovered %q", got)
	}
	o := defaultLogin()
	o.initiator = "iqn.2026-11.org.example:stranger"
	wantStatus(t, dial(t, addr).login(o), pdu.LoginInitiatorError, pdu.DetailForbidden)
}

// TestRFC7143_11_13_5_LoginStatus covers the refusals of the first Login
// Request.
func TestRFC7143_11_13_5_LoginStatus(t *testing.T) {
	_, addr := startTarget(t, testConfig(t))
	cases := []struct {
		name   string
		mod    func(*loginOpts)
		detail uint8
	}{
		{"UnknownTarget", func(o *loginOpts) { o.target = "iqn.2026-11.org.example:nope" }, pdu.DetailNotFound},
		{"MissingTargetName", func(o *loginOpts) { o.target = "" }, pdu.DetailMissingParam},
		{"MissingInitiatorName", func(o *loginOpts) { o.initiator = "" }, pdu.DetailMissingParam},
		{"NeverIssuedTSIH", func(o *loginOpts) { o.tsih = 0x4242 }, pdu.DetailNoSession},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := defaultLogin()
			c.mod(&o)
			wantStatus(t, dial(t, addr).login(o), pdu.LoginInitiatorError, c.detail)
		})
	}
}

// TestDiscoveryWithISCSILs: libiscsi's own discovery tool sees the target
// (and its LUN) only from an initiator in the ACL and only with the right
// CHAP secret.
func TestDiscoveryWithISCSILs(t *testing.T) {
	testenv.NeedCommands(t, "iscsi-ls")
	cfg := testConfig(t)
	cfg.AllowInitiators = []string{testInitiator}
	_, addr := startTarget(t, cfg)
	ls := func(initiator, secret string) (string, error) {
		out, err := exec.Command("iscsi-ls", "-s", "-i", initiator,
			fmt.Sprintf("iscsi://%s%%%s@%s", testUser, secret, addr)).CombinedOutput()
		return string(out), err
	}
	out, err := ls(testInitiator, testSecret)
	if err != nil || !strings.Contains(out, "Target:"+testIQN+" Portal:"+addr+",1") || !strings.Contains(out, "Lun:0") {
		t.Errorf("allowed initiator: %v\n%s", err, out)
	}
	if out, err := ls("iqn.2026-11.org.example:stranger", testSecret); err != nil || strings.Contains(out, "Target:") {
		t.Errorf("initiator outside the ACL: %v\n%s", err, out)
	}
	if out, err := ls(testInitiator, "wrong-secret-123"); err == nil || !strings.Contains(out, "Authentication failure") {
		t.Errorf("wrong secret: %v\n%s", err, out)
	}
}

// TestRFC7143_11_10_TextInFullFeaturePhase: in a normal session,
// SendTargets with no value describes the current target; keys the target
// does not renegotiate after login are rejected, unknown ones not
// understood; a non-immediate Text Request takes a CmdSN.
func TestRFC7143_11_10_TextInFullFeaturePhase(t *testing.T) {
	_, addr := startTarget(t, testConfig(t))
	c := dial(t, addr)
	c.mustLogin(defaultLogin())
	c.send(&pdu.TextRequest{Final: true, ITT: c.nextITT(), TTT: pdu.ReservedTag, CmdSN: c.cmdSN, ExpStatSN: c.expStatSN,
		Data: pdu.EncodeText([]pdu.KeyValue{{Key: "SendTargets", Value: ""}, {Key: "MaxBurstLength", Value: "4096"}, {Key: "X-com.example.foo", Value: "1"}})})
	c.cmdSN++
	resp, ok := c.recv().(*pdu.TextResponse)
	if !ok {
		t.Fatalf("want a Text Response, got %+v", resp)
	}
	want := pdu.EncodeText([]pdu.KeyValue{{Key: "TargetName", Value: testIQN}, {Key: "TargetAddress", Value: addr + ",1"},
		{Key: "MaxBurstLength", Value: "Reject"}, {Key: "X-com.example.foo", Value: "NotUnderstood"}})
	if !bytes.Equal(resp.Data, want) || resp.ExpCmdSN != c.cmdSN {
		t.Fatalf("Text Response %q ExpCmdSN %d; want %q %d", resp.Data, resp.ExpCmdSN, want, c.cmdSN)
	}
}

// TestMutualCHAPWithLibiscsi: a real initiator (libiscsi's iscsi-inq)
// verifies the target's answer to its challenge: right with the target's
// secret, refused with another.
func TestMutualCHAPWithLibiscsi(t *testing.T) {
	testenv.NeedCommands(t, "iscsi-inq")
	_, addr := startTarget(t, testConfig(t))
	inq := func(targetSecret string) (string, error) {
		out, err := exec.Command("iscsi-inq", fmt.Sprintf("iscsi://%s%%%s@%s/%s/0?target_user=%s&target_password=%s",
			testUser, testSecret, addr, testIQN, testMutualU, targetSecret)).CombinedOutput()
		return string(out), err
	}
	if out, err := inq(testMutualS); err != nil || !strings.Contains(out, "DIRECT_ACCESS") {
		t.Errorf("mutual CHAP with the right secret: %v\n%s", err, out)
	}
	if out, err := inq("not-the-target-secret"); err == nil || !strings.Contains(out, "CHAP_R") {
		t.Errorf("libiscsi accepted the target with a wrong mutual secret: %v\n%s", err, out)
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestSecretsNeverLogged: at debug level, through failed and successful
// one-way and mutual CHAP logins, no secret reaches the log.
func TestSecretsNeverLogged(t *testing.T) {
	var logs syncBuffer
	cfg := testConfig(t)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tg, addr := startTarget(t, cfg)
	o := defaultLogin()
	o.mutualUser, o.mutualSecret = testMutualU, testMutualS
	dial(t, addr).mustLogin(o)
	o.secret = "wrong-secret-xyz"
	dial(t, addr).login(o)
	tg.Close()
	out := logs.String()
	if !strings.Contains(out, "login") {
		t.Fatalf("nothing logged:\n%s", out)
	}
	for _, s := range []string{testSecret, testMutualS} {
		if strings.Contains(out, s) {
			t.Fatalf("secret %q in the log:\n%s", s, out)
		}
	}
}
