package target

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/shareless/shareless/iscsi/pdu"
)

// TestCloseEndsSessions: Close (and a cancelled Serve context) end every
// session and return; several targets live in one process, each bound
// only to its own address.
func TestCloseEndsSessions(t *testing.T) {
	leakCheck(t)
	tg, addr := startTarget(t, testConfig(t))
	cfg2 := testConfig(t)
	cfg2.IQN = testIQN + "-two"
	tg2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- tg2.Serve(ctx) }()
	addr2 := tg2.Addrs()[0].String()
	if addr2 == addr || len(tg2.Addrs()) != 1 {
		t.Fatalf("second target bound %v", tg2.Addrs())
	}
	o := defaultLogin()
	o.target = cfg2.IQN
	c2 := dial(t, addr2)
	c2.mustLogin(o)
	wantStatus(t, dial(t, addr).login(o), pdu.LoginInitiatorError, pdu.DetailNotFound)

	c := dial(t, addr)
	c.mustLogin(defaultLogin())
	tg.Close()
	if _, err := c.fr.ReadMessage(); err == nil {
		t.Fatal("session survived Close")
	}
	if res := c2.command(0, read10(0, 1), nil, 512); res.status != 0 {
		t.Fatalf("other target after Close of the first: status %d", res.status)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if _, err := c2.fr.ReadMessage(); err == nil {
		t.Fatal("session survived the cancelled Serve")
	}
}

// TestBindsOnlyItsAddress: a target listening on 127.0.0.1 cannot be
// reached through the host's other addresses on the same port.
func TestBindsOnlyItsAddress(t *testing.T) {
	_, addr := startTarget(t, testConfig(t))
	_, port, _ := net.SplitHostPort(addr)
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	tried := 0
	for _, a := range ifaddrs {
		ip, ok := a.(*net.IPNet)
		if !ok || ip.IP.IsLoopback() || ip.IP.IsLinkLocalUnicast() {
			continue
		}
		tried++
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.IP.String(), port), time.Second); err == nil {
			c.Close()
			t.Errorf("target bound to %s answers on %s", addr, ip.IP)
		}
	}
	if tried == 0 {
		t.Skip("no non-loopback address to try")
	}
}
