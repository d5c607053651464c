// Package targettest starts an iscsi/target for the length of a test, the
// way net/http/httptest starts a server: the initiator's and the CLI's
// tests talk to a real target without each writing the same start and
// cleanup. (iscsi/target's own tests cannot import it: that would be an
// import cycle.)
package targettest

import (
	"context"
	"testing"

	"github.com/shareless/shareless/iscsi/target"
)

// Start serves cfg until the test ends and returns the target and the
// address it listens on (cfg.Listen is usually "127.0.0.1:0"). A Serve
// error other than a clean stop fails the test.
func Start(t testing.TB, cfg target.Config) (*target.Target, string) {
	t.Helper()
	tg, err := target.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tg.Serve(context.Background()) }()
	t.Cleanup(func() {
		tg.Close()
		if err := <-done; err != nil {
			t.Errorf("target %s: %v", cfg.IQN, err)
		}
	})
	return tg, tg.Addrs()[0].String()
}
