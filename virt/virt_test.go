package virt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/lab"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/virt"
)

// connect opens an adapter connection to a lab host, closed at cleanup.
func connect(t *testing.T, h *lab.Host) *virt.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := virt.Connect(ctx, virt.Config{URI: h.URI(), Logger: lab.Logger(t).With("host", h.Name)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawDisk creates a sparse raw image of size bytes.
func rawDisk(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// dataDisk creates a raw image of size bytes at path holding 8 MiB of
// random data after sector 0 (where the guest counts), so that a copy of
// the disk has something to get wrong.
func dataDisk(t *testing.T, path string, size int64) {
	t.Helper()
	data := make([]byte, 512+8<<20)
	rand.Read(data[512:])
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// sameBeyondCounter fails the test unless two images are equal after
// sector 0.
func sameBeyondCounter(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) != len(y) || !bytes.Equal(x[512:], y[512:]) {
		t.Fatalf("%s and %s differ beyond the counter sector", a, b)
	}
}

// qmpLog returns the host's libvirtd log, which the lab makes hold every
// QMP command libvirt sent to QEMU.
func qmpLog(t *testing.T, h *lab.Host) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.Dir, "log", "libvirtd.log"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitCounter waits until the guest's counter on image passes after.
func waitCounter(t *testing.T, image string, after uint64, timeout time.Duration) uint64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, err := lab.ReadCounter(image)
		if err == nil && n > after {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest counter on %s did not pass %d within %v (last %d, %v)", image, after, timeout, n, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nextEvent returns the next lifecycle event of domain name (or a resync).
func nextEvent(t *testing.T, ch <-chan virt.LifecycleEvent, name string) virt.LifecycleEvent {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("event channel closed")
			}
			if e.Resync || e.Domain.Name == name {
				t.Logf("event: %s", e)
				return e
			}
		case <-timeout:
			t.Fatalf("no lifecycle event for %s within 60s", name)
		}
	}
}

// expectEvent waits for the next event of type typ for domain name and
// checks its detail. Events of other types pass (libvirt sends
// resumed/unpaused before started/booted, QEMU's shutdown/host before
// stopped/destroyed, defined/added before a migration's started).
func expectEvent(t *testing.T, ch <-chan virt.LifecycleEvent, name string, typ virt.EventType, detail string) {
	t.Helper()
	e := nextEvent(t, ch, name)
	for e.Resync || e.Type != typ {
		e = nextEvent(t, ch, name)
	}
	if e.DetailString() != detail {
		t.Fatalf("event %s, want %s %s/%s", e, name, typ, detail)
	}
}

// TestOneHost exercises the adapter against one real libvirtd: secrets,
// typed errors, domain XML, lifecycle events of a real guest, and
// reconnection across a libvirtd restart with the guest running.
func TestOneHost(t *testing.T) {
	testenv.SkipIfShort(t)
	l := lab.Start(t, lab.Options{Hosts: 1})
	h := l.A()
	c := connect(t, h)
	ctx := t.Context()
	// Synchronous-writes block copy (adoption) needs libvirt 8.0.
	if v, err := c.LibVersion(ctx); err != nil || v < 8_000_000 {
		t.Fatalf("libvirt version %d, %v; want >= 8.0.0", v, err)
	}

	t.Run("secrets", func(t *testing.T) {
		usage := "shl-" + l.ID + "-chap"
		s, err := c.DefineISCSISecret(ctx, usage, "CHAP of a test target")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetSecretValue(ctx, s, []byte("s3cret-pass")); err != nil {
			t.Fatal(err)
		}
		// libvirt keeps a persistent secret's value beside its definition.
		b, err := os.ReadFile(filepath.Join(h.Dir, "etc", "secrets", s.UUID.String()+".base64"))
		if err != nil || string(b) != base64.StdEncoding.EncodeToString([]byte("s3cret-pass")) {
			t.Fatalf("stored value %q, %v", b, err)
		}
		again, err := c.DefineISCSISecret(ctx, usage, "redefined")
		if err != nil || again.UUID != s.UUID {
			t.Fatalf("redefining: %v, %v (first %v)", again, err, s.UUID)
		}
		if got, err := c.LookupISCSISecret(ctx, usage); err != nil || got != s {
			t.Fatalf("lookup: %v, %v", got, err)
		}
		if err := c.UndefineSecret(ctx, s); err != nil {
			t.Fatal(err)
		}
		if _, err := c.LookupISCSISecret(ctx, usage); !errors.Is(err, virt.ErrNoSecret) {
			t.Fatalf("lookup after undefine: %v, want ErrNoSecret", err)
		}
		if err := c.UndefineSecret(ctx, s); !errors.Is(err, virt.ErrNoSecret) {
			t.Fatalf("second undefine: %v, want ErrNoSecret", err)
		}
	})

	t.Run("missing domain", func(t *testing.T) {
		_, err := c.LookupDomain(ctx, "shl-"+l.ID+"-nope")
		var ve *virt.Error
		if !errors.Is(err, virt.ErrNoDomain) || !errors.As(err, &ve) || ve.Message == "" {
			t.Fatalf("got %v, want a *virt.Error matching ErrNoDomain", err)
		}
		t.Logf("error reads: %v", err)
	})

	// One guest serves the rest: events, XML, state, reconnection.
	events, err := c.LifecycleEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	name := "shl-" + l.ID + "-one"
	disk := rawDisk(t, l.Dir, "one.img", 16<<20)
	d, err := c.DefineDomain(ctx, l.Guest.DomainXML(name, l.ConsoleLog(name), lab.Disk{Target: "vda", File: disk}))
	if err != nil {
		t.Fatal(err)
	}
	expectEvent(t, events, name, virt.EventDefined, "added")
	if err := c.StartDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, events, name, virt.EventStarted, "booted")
	if err := lab.WaitConsole(l.ConsoleLog(name), lab.BootMarker, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	n := waitCounter(t, disk, 0, 10*time.Second)
	t.Logf("guest counting on its disk: %d", n)

	t.Run("xml and lookups", func(t *testing.T) {
		live, err := c.DomainXML(ctx, d, virt.XMLSecure)
		if err != nil || !strings.Contains(live, "<source file='"+disk+"'") || !strings.Contains(live, "id=") {
			t.Fatalf("live XML (%v):\n%s", err, live)
		}
		inactive, err := c.DomainXML(ctx, d, virt.XMLInactive|virt.XMLSecure)
		if err != nil || !strings.Contains(inactive, "<source file='"+disk+"'") || strings.Contains(inactive, "<domain type='qemu' id=") {
			t.Fatalf("inactive XML (%v):\n%s", err, inactive)
		}
		byUUID, err := c.LookupDomainByUUID(ctx, d.UUID)
		if err != nil || byUUID.Name != name || byUUID.ID <= 0 {
			t.Fatalf("lookup by UUID: %+v, %v", byUUID, err)
		}
		all, err := c.Domains(ctx)
		if err != nil || len(all) != 1 || all[0].UUID != d.UUID {
			t.Fatalf("domains: %+v, %v", all, err)
		}
		if st, err := c.DomainState(ctx, d); err != nil || st != virt.StateRunning {
			t.Fatalf("state %v, %v", st, err)
		}
	})

	t.Run("hung daemon", func(t *testing.T) {
		// A deadline holds even when libvirtd does not answer at all.
		if err := h.Libvirtd().Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		start := time.Now()
		_, err := c.LookupDomain(short, name)
		took := time.Since(start)
		cancel()
		if err := h.Libvirtd().Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(err, context.DeadlineExceeded) || took > 2*time.Second {
			t.Fatalf("call to a stopped libvirtd: %v after %v, want DeadlineExceeded after 500ms", err, took)
		}
		if _, err := c.LookupDomain(ctx, name); err != nil {
			t.Fatalf("after SIGCONT: %v", err)
		}
	})

	t.Run("frozen daemon is dropped", func(t *testing.T) {
		// Frozen beyond the probe's patience, the daemon's connection is
		// dropped; after the thaw the Conn reconnects and the event
		// subscription resyncs.
		if err := h.Libvirtd().Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(17 * time.Second) // probe interval 5 s + probe timeout 10 s, and some
		if err := h.Libvirtd().Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if e := nextEvent(t, events, name); !e.Resync {
			t.Fatalf("first event after the thaw: %s, want resync", e)
		}
		if _, err := c.LookupDomain(ctx, name); err != nil {
			t.Fatalf("after the thaw: %v", err)
		}
	})

	t.Run("reconnect", func(t *testing.T) {
		if err := h.StopLibvirtd(); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := c.LookupDomain(short, name)
		cancel()
		if !errors.Is(err, virt.ErrDisconnected) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call with libvirtd down: %v, want ErrDisconnected and DeadlineExceeded", err)
		}
		if err := h.StartLibvirtd(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		wait, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		got, err := c.LookupDomain(wait, name)
		if err != nil || got.UUID != d.UUID {
			t.Fatalf("lookup after restart: %v, %v", got, err)
		}
		t.Logf("adapter answered %v after libvirtd came back", time.Since(start).Round(time.Millisecond))
		if e := nextEvent(t, events, name); !e.Resync {
			t.Fatalf("first event after reconnection: %s, want resync", e)
		}
		// The guest ran on while libvirtd was away.
		waitCounter(t, disk, waitCounter(t, disk, 0, 5*time.Second), 10*time.Second)
	})

	t.Run("destroy", func(t *testing.T) {
		if err := c.DestroyDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
		expectEvent(t, events, name, virt.EventStopped, "destroyed")
		if err := c.DestroyDomain(ctx, d); !errors.Is(err, virt.ErrOperationInvalid) {
			t.Fatalf("destroying a stopped domain: %v, want ErrOperationInvalid", err)
		}
		if err := c.UndefineDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
		expectEvent(t, events, name, virt.EventUndefined, "removed")
	})
}
