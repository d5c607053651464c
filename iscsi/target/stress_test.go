package target

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/testenv"
)

// leakCheck records goroutines and open files now and, at cleanup
// (registered first, so it runs after the target has stopped), checks that
// they came back down.
func leakCheck(t *testing.T) {
	fds := func() int { e, _ := os.ReadDir("/proc/self/fd"); return len(e) }
	g0, f0 := runtime.NumGoroutine(), fds()
	t.Cleanup(func() {
		var g, f int
		for range 100 {
			g, f = runtime.NumGoroutine(), fds()
			if g <= g0 && f <= f0 {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		buf := make([]byte, 1<<20)
		t.Errorf("leak: goroutines %d -> %d, fds %d -> %d\n%s", g0, g, f0, f, buf[:runtime.Stack(buf, true)])
	})
}

// TestSequentialLogins: 10,000 CHAP logins and logouts in a row; the
// target keeps answering and leaks nothing.
func TestSequentialLogins(t *testing.T) {
	testenv.SkipIfShort(t)
	leakCheck(t)
	tg, addr := startTarget(t, testConfig(t))
	for i := range 10000 {
		c := dial(t, addr)
		if err := c.login(defaultLogin()); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		c.logout()
	}
	// The last session ends just after its Logout Response is sent.
	for i := 0; ; i++ {
		tg.mu.Lock()
		n := len(tg.sessions)
		tg.mu.Unlock()
		if n == 0 {
			break
		}
		if i == 100 {
			t.Fatalf("%d sessions left after every login logged out", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConcurrentSessions: 32 sessions do verified I/O on their own
// regions of one LUN while other connections keep logging in and out (and
// dropping without logout); every byte reads back as written.
func TestConcurrentSessions(t *testing.T) {
	testenv.SkipIfShort(t)
	leakCheck(t)
	_, addr := startTarget(t, testConfig(t))
	stop := make(chan struct{})
	var churn sync.WaitGroup
	for w := range 4 {
		churn.Add(1)
		go func() {
			defer churn.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c := dial(t, addr)
				o := defaultLogin()
				o.initiator = fmt.Sprintf("%s-churn%d", testInitiator, w)
				if err := c.login(o); err != nil {
					t.Errorf("churn login: %v", err)
					return
				}
				if i%2 == 0 {
					c.logout()
				} else {
					c.nc.Close()
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for s := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, addr)
			o := defaultLogin()
			o.initiator = fmt.Sprintf("%s-%d", testInitiator, s)
			if err := c.login(o); err != nil {
				t.Errorf("session %d: %v", s, err)
				return
			}
			base := uint32(s) * 2048 // 1 MiB per session
			for i := range 20 {
				data := bytes.Repeat([]byte{byte(s), byte(i), 0xc3, 0x3c}, 16<<10) // 64 KiB
				lba := base + uint32(i%16)*128
				if r := c.command(0, write10(lba, 128), data, 0); r.status != 0 {
					t.Errorf("session %d write: status %d", s, r.status)
					return
				}
				if r := c.command(0, read10(lba, 128), nil, 64<<10); r.status != 0 || !bytes.Equal(r.data, data) {
					t.Errorf("session %d: read back differs (status %d)", s, r.status)
					return
				}
			}
			c.logout()
		}()
	}
	wg.Wait()
	close(stop)
	churn.Wait()
}
