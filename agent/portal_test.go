package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/iscsi/initiator"
	"github.com/shareless/shareless/iscsi/pdu"
	"github.com/shareless/shareless/iscsi/scsi"
	"github.com/shareless/shareless/iscsi/target"
)

// TestPortalRoutesByTargetName: one port serves each disk's target; a
// login names the target it gets, and a name not served here is refused
// with "not found" (RFC 7143 §11.13.5), including after the disk goes.
func TestPortalRoutesByTargetName(t *testing.T) {
	p, err := newPortal([]string{"127.0.0.1"}, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.serve(ctx) }()
	defer func() { cancel(); <-done }()

	sizes := map[string]int64{"iqn.2026-11.io.shareless:test.one": 1 << 20, "iqn.2026-11.io.shareless:test.two": 2 << 20}
	for iqn, size := range sizes {
		path := filepath.Join(t.TempDir(), "img")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		dev, err := blockdev.OpenFile(path, false)
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		tgt, err := target.New(target.Config{IQN: iqn, NoAuth: true,
			LUNs: []target.LUN{{Device: dev, Unit: scsi.UnitConfig{ID: iqn}}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.add(iqn, tgt); err != nil {
			t.Fatal(err)
		}
	}
	dial := func(iqn string) (*initiator.Session, error) {
		return initiator.Dial(ctx, initiator.Config{Addr: p.addr().String(), Target: iqn, ReconnectTimeout: -1})
	}
	for iqn, size := range sizes {
		s, err := dial(iqn)
		if err != nil {
			t.Fatalf("login to %s: %v", iqn, err)
		}
		if s.Size() != size {
			t.Errorf("%s: size %d, want %d", iqn, s.Size(), size)
		}
		s.Close()
	}
	notFound := func(iqn string) {
		t.Helper()
		_, err := dial(iqn)
		var le *initiator.LoginError
		if !errors.As(err, &le) || le.Class != pdu.LoginInitiatorError || le.Detail != pdu.DetailNotFound {
			t.Errorf("login to %s: %v, want target not found", iqn, err)
		}
	}
	notFound("iqn.2026-11.io.shareless:test.three")
	p.remove("iqn.2026-11.io.shareless:test.two")
	notFound("iqn.2026-11.io.shareless:test.two")
}
