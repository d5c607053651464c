package initiator

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"github.com/shareless/shareless/internal/secret"
	"github.com/shareless/shareless/iscsi/target/targettest"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/internal/tgtd"
	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/scsi"
	"github.com/shareless/shareless/iscsi/target"
)

const (
	testIQN    = "iqn.2026-11.io.shareless.test:disk"
	testUser   = "shareless-user"
	testSecret = "initiator-secret-1"
	mutualUser = "shareless-target"
	mutualPass = "target-secret-22"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func chapSecret(t testing.TB, s string) secret.Secret {
	sec, err := chap.NewSecret([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// sparseFile creates a file of size bytes with no data.
func sparseFile(t testing.TB, size int64) string {
	p := filepath.Join(t.TempDir(), "lun.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// startTgtd serves one thin LUN with mutual CHAP.
func startTgtd(t *testing.T, size int64) (*tgtd.Server, string) {
	srv := tgtd.Start(t)
	img := sparseFile(t, size)
	srv.AddTarget(tgtd.Target{IQN: testIQN, LUNs: []string{img}, Thin: true,
		User: testUser, Secret: testSecret, MutualUser: mutualUser, MutualSecret: mutualPass,
		Params: map[string]string{"MaxRecvDataSegmentLength": "262144"}})
	return srv, img
}

func creds(t testing.TB, mutual bool) Credentials {
	c := Credentials{CHAP: chap.Credentials{User: testUser, Secret: chapSecret(t, testSecret)}}
	if mutual {
		c.Mutual = chap.Credentials{User: mutualUser, Secret: chapSecret(t, mutualPass)}
	}
	return c
}

// TestTgtdInterop runs the initiator against Debian's tgtd, a target we
// did not write.
func TestTgtdInterop(t *testing.T) {
	const size = 64 << 20
	srv, img := startTgtd(t, size)
	interop(t, srv.Addr(), 1, img, size)
}

// TestTgtdThickAllocation: a tgtd LUN without thin provisioning (LBPME
// clear) cannot say where its holes are, though its file has them: the
// session reports it mapped everywhere and sends no GET LBA STATUS, so a
// copy reads it all (the replicator's fallback).
func TestTgtdThickAllocation(t *testing.T) {
	const size = 16 << 20
	srv := tgtd.Start(t)
	srv.AddTarget(tgtd.Target{IQN: testIQN, LUNs: []string{sparseFile(t, size)}, User: testUser, Secret: testSecret})
	s, err := Dial(t.Context(), Config{Addr: srv.Addr(), Target: testIQN, LUN: 1, Credentials: creds(t, false), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Thin() {
		t.Fatal("tgtd reports a LUN without thin_provisioning thin")
	}
	for _, off := range []int64{0, 8 << 20} {
		if mapped, n, err := s.Allocation(t.Context(), off); err != nil || !mapped || n != size-off {
			t.Errorf("Allocation(%d) = %v, %d, %v; want mapped to the end", off, mapped, n, err)
		}
	}
}

// TestOwnTargetInterop runs the same checks against iscsi/target.
func TestOwnTargetInterop(t *testing.T) {
	const size = 64 << 20
	addr, img := startOwnTarget(t, size, nil)
	interop(t, addr, 0, img, size)
}

// startOwnTarget serves one sparse file as LUN 0 of testIQN with mutual
// CHAP, on a free port; tune may adjust the configuration.
func startOwnTarget(t testing.TB, size int64, tune func(*target.Config)) (addr, img string) {
	img = sparseFile(t, size)
	dev, err := blockdev.OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	cfg := target.Config{
		IQN: testIQN, Listen: []string{"127.0.0.1:0"},
		LUNs:       []target.LUN{{Device: dev, Unit: scsi.UnitConfig{ID: img}}},
		CHAP:       &chap.Credentials{User: testUser, Secret: chapSecret(t, testSecret)},
		MutualCHAP: &chap.Credentials{User: mutualUser, Secret: chapSecret(t, mutualPass)},
		Logger:     testLogger(t).With("side", "target"),
	}
	if tune != nil {
		tune(&cfg)
	}
	_, addr = targettest.Start(t, cfg)
	return addr, img
}

// interop checks discovery, CHAP, and every block operation against the
// target at addr, whose LUN lun is backed by the file img.
func interop(t *testing.T, addr string, lun uint16, img string, size int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("SendTargets", func(t *testing.T) {
		got, err := Discover(ctx, addr, Config{Credentials: creds(t, false), Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Name != testIQN || len(got[0].Addresses) == 0 {
			t.Fatalf("discovered %+v", got)
		}
		if p := Portal(got[0].Addresses[0]); p != addr {
			t.Errorf("portal %q, want %q", p, addr)
		}
	})

	t.Run("WrongSecret", func(t *testing.T) {
		c := creds(t, false)
		c.CHAP.Secret = chapSecret(t, "not-the-secret")
		_, err := Dial(ctx, Config{Addr: addr, Target: testIQN, LUN: lun, Credentials: c, Logger: testLogger(t)})
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("got %v, want ErrAuth", err)
		}
	})

	t.Run("WrongMutualSecret", func(t *testing.T) {
		c := creds(t, true)
		c.Mutual.Secret = chapSecret(t, "not-the-target-secret")
		_, err := Dial(ctx, Config{Addr: addr, Target: testIQN, LUN: lun, Credentials: c, Logger: testLogger(t)})
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("got %v, want ErrAuth", err)
		}
	})

	s, err := Dial(ctx, Config{Addr: addr, Target: testIQN, LUN: lun, Credentials: creds(t, true), Depth: 16, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size() != size || s.BlockSize() != 512 || !s.Thin() {
		t.Fatalf("size %d block %d thin %v", s.Size(), s.BlockSize(), s.Thin())
	}

	t.Run("ReadWriteAtDepth", func(t *testing.T) {
		want := make([]byte, 8<<20)
		rand.Read(want)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		const piece = 256 << 10
		for i := 0; i < len(want)/piece; i++ {
			wg.Go(func() {
				errs <- s.WriteAt(ctx, want[i*piece:(i+1)*piece], int64(4<<20+i*piece), i%7 == 0)
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if err := s.ReadAt(ctx, got, 4<<20); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("read back differs from written data")
		}
		onDisk := make([]byte, len(want))
		f, _ := os.Open(img)
		f.ReadAt(onDisk, 4<<20)
		f.Close()
		if !bytes.Equal(onDisk, want) {
			t.Fatal("backing file differs from written data")
		}
	})

	t.Run("UnmapAndLBAStatus", func(t *testing.T) {
		mapped, n, err := s.Allocation(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if mapped || n != 4<<20 {
			t.Fatalf("Allocation(0) = %v, %d; want unmapped 4 MiB", mapped, n)
		}
		mapped, n, err = s.Allocation(ctx, 4<<20)
		if err != nil || !mapped || n != 8<<20 {
			t.Fatalf("Allocation(4 MiB) = %v, %d, %v; want mapped 8 MiB", mapped, n, err)
		}
		if err := s.Discard(ctx, 5<<20, 1<<20); err != nil {
			t.Fatal(err)
		}
		mapped, n, err = s.Allocation(ctx, 5<<20)
		if err != nil || mapped || n != 1<<20 {
			t.Fatalf("after UNMAP Allocation(5 MiB) = %v, %d, %v; want unmapped 1 MiB", mapped, n, err)
		}
		if err := s.WriteZeroes(ctx, 6<<20, 1<<20, true); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2<<20)
		if err := s.ReadAt(ctx, buf, 5<<20); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, make([]byte, len(buf))) {
			t.Fatal("unmapped range does not read as zeroes")
		}
	})

	t.Run("SenseError", func(t *testing.T) {
		// A VPD page no target has: CHECK CONDITION with sense data,
		// decoded into a typed error.
		_, err := s.VPD(ctx, 0xc7)
		var se *scsi.SenseError
		if !errors.As(err, &se) || !errors.Is(err, scsi.SenseIllegalRequest) {
			t.Fatalf("got %v, want ILLEGAL REQUEST as a *scsi.SenseError", err)
		}
	})

	t.Run("OutOfRange", func(t *testing.T) {
		if err := s.ReadAt(ctx, make([]byte, 512), size); !errors.Is(err, blockdev.ErrOutOfRange) {
			t.Fatalf("read past the end: %v, want ErrOutOfRange", err)
		}
	})
}

// TestCmdSNWindow: with a target that allows only two commands at a time
// (MaxCmdSN, RFC 7143 §4.2.2.1), a session of depth 16 waits for the
// window instead of overrunning it, and every command completes.
func TestCmdSNWindow(t *testing.T) {
	addr, _ := startOwnTarget(t, 16<<20, func(c *target.Config) { c.QueueDepth = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Dial(ctx, Config{Addr: addr, Target: testIQN, LUN: 0, Credentials: creds(t, true), Depth: 16, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := make([]byte, 4<<20)
	rand.Read(want)
	const piece = 64 << 10
	var wg sync.WaitGroup
	for i := range len(want) / piece {
		wg.Go(func() {
			if err := s.WriteAt(ctx, want[i*piece:(i+1)*piece], int64(i*piece), false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got := make([]byte, len(want))
	if err := s.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data differs")
	}
}

// TestAnswersTargetNOPIn: a target that pings an idle session with NOP-In
// (§11.19) and drops connections that do not answer keeps ours.
func TestAnswersTargetNOPIn(t *testing.T) {
	addr, _ := startOwnTarget(t, 16<<20, func(c *target.Config) {
		c.NOPInterval, c.NOPTimeout = 50*time.Millisecond, 300*time.Millisecond
	})
	px := startProxy(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Dial(ctx, Config{Addr: px.Addr(), Target: testIQN, LUN: 0, Credentials: creds(t, true),
		KeepAlive: time.Hour, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	time.Sleep(time.Second)
	if err := s.ReadAt(ctx, make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if n := px.accepted.Load(); n != 1 {
		t.Errorf("%d connections: the target dropped an idle session that should have answered its NOP-Ins", n)
	}
}
