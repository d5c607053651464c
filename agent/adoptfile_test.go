package agent

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/iscsi/initiator"
	"github.com/shareless/shareless/localapi"
)

// TestAdoptFilesWithoutLibvirt: on a host without libvirtd ([libvirt] uri
// empty) a raw disk file becomes a managed disk holding exactly its bytes,
// served by the agent; adoption by domain says to use files; files that
// cannot be adopted are refused and leave nothing behind.
func TestAdoptFilesWithoutLibvirt(t *testing.T) {
	a, c := startLocalLibvirt(t, false)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const inst = "0d1c8e5e-7b1a-4f57-9f5d-1a2b3c4d5e6f"
	dir := t.TempDir()
	// 4 MiB: data in the first MiB and at 3 MiB, holes between.
	want := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{7}).Read(want[:1<<20])
	rand.NewChaCha8([32]byte{8}).Read(want[3<<20 : 3<<20+4096])
	file := filepath.Join(dir, "disk")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{{0, 1 << 20}, {3 << 20, 3<<20 + 4096}} {
		if _, err := f.WriteAt(want[r[0]:r[1]], int64(r[0])); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(int64(len(want))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	qcow2 := filepath.Join(dir, "disk.local")
	if err := os.WriteFile(qcow2, append([]byte("QFI\xfb"), make([]byte, 508)...), 0o600); err != nil {
		t.Fatal(err)
	}

	if _, err := c.Adopt(ctx, inst, nil); err == nil || !strings.Contains(err.Error(), "--file") {
		t.Fatalf("adopt by domain without libvirtd: %v", err)
	}
	for _, bad := range [][]string{{"disk"}, {qcow2}, {file, qcow2}, {filepath.Join(dir, "missing")}} {
		if _, err := c.AdoptFiles(ctx, inst, bad, nil); err == nil {
			t.Fatalf("adopting %v succeeded", bad)
		}
	}
	if names, err := a.store.List(); err != nil || len(names) != 0 {
		t.Fatalf("refused adoptions left %v (%v)", names, err)
	}

	var last localapi.Progress
	ad, err := c.AdoptFiles(ctx, inst, []string{file}, func(p localapi.Progress) { last = p })
	if err != nil {
		t.Fatal(err)
	}
	if len(ad.Disks) != 1 || ad.Disks[0].Disk != "disk" || ad.Disks[0].Size != int64(len(want)) ||
		ad.Disks[0].IQN != "iqn.2026-11.io.shareless:"+inst+".disk" {
		t.Fatalf("adoption record %+v", ad)
	}
	if last.Done != uint64(len(want)) || last.Total != uint64(len(want)) {
		t.Fatalf("last progress %+v", last)
	}
	dk := a.disks.get(DiskRef{inst, "disk"})
	if dk == nil {
		t.Fatal("the managed disk is not open")
	}
	got := make([]byte, len(want))
	if err := dk.rep.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the managed disk does not hold the file's bytes")
	}
	// The export tells where the holes are (GET LBA STATUS), so that a
	// peer's copier does not read them.
	sess, err := initiator.Dial(ctx, initiator.Config{Addr: a.disks.portal.addr().String(), Target: ad.Disks[0].IQN,
		InitiatorName: initiatorName("peer"), Credentials: a.initiatorCredentials(), ReconnectTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, c := range []struct {
		off       int64
		allocated bool
	}{{0, true}, {2 << 20, false}, {3 << 20, true}} {
		allocated, n, err := sess.Allocation(ctx, c.off)
		if err != nil || allocated != c.allocated || n <= 0 {
			t.Errorf("over iSCSI, allocation at %d: %v for %d bytes (%v), want %v", c.off, allocated, n, err, c.allocated)
		}
	}
	if _, err := c.AdoptFiles(ctx, inst, []string{file}, nil); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("adopting the file again: %v", err)
	}
}
