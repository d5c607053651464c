package virt_test

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/lab"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/virt"
)

// TestCopyDiskAdoption adopts a running guest's local raw file disk: a
// block copy in synchronous-writes mode onto an iSCSI LUN reached on
// 127.0.0.1 with CHAP (as a managed disk is), then a pivot. The guest
// keeps counting on the LUN, the old file stops changing, and the LUN
// holds the file's data. A copy with the wrong CHAP password fails and
// leaves the guest on its file.
func TestCopyDiskAdoption(t *testing.T) {
	testenv.SkipIfShort(t)
	l := lab.Start(t, lab.Options{Hosts: 1})
	h := l.A()
	c := connect(t, h)
	ctx := t.Context()

	const size = 32 << 20
	file := filepath.Join(l.Dir, "local.img")
	dataDisk(t, file, size)
	managed := rawDisk(t, l.Dir, "managed.img", size)
	tgt := h.StartTGTD(t)
	lun := tgt.AddLUN(t, "adopt", managed)
	tgt.RequireCHAP(t, lun, "shl-user", "shl-chap-password")
	usage := "shl-" + l.ID + "-adopt"
	secret, err := c.DefineISCSISecret(ctx, usage, "CHAP of the adoption LUN")
	if err != nil {
		t.Fatal(err)
	}
	dst := virt.ISCSIDisk{IQN: lun.IQN, LUN: lun.LUN, Host: "127.0.0.1", Port: lun.Port,
		Username: "shl-user", SecretUsage: usage}

	name := "shl-" + l.ID + "-adopt"
	d, err := c.DefineDomain(ctx, l.Guest.DomainXML(name, l.ConsoleLog(name), lab.Disk{Target: "vda", File: file}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConsole(l.ConsoleLog(name), lab.BootMarker, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, file, 1, 10*time.Second)

	t.Run("wrong password", func(t *testing.T) {
		if err := c.SetSecretValue(ctx, secret, []byte("not-the-password")); err != nil {
			t.Fatal(err)
		}
		err := c.CopyDisk(ctx, d, "vda", dst, nil)
		if err == nil {
			t.Fatal("copy with a wrong CHAP password succeeded")
		}
		t.Logf("refused as expected: %v", err)
		live, err := c.DomainXML(ctx, d, 0)
		if err != nil || !strings.Contains(live, "<source file='"+file+"'") {
			t.Fatalf("guest left its file (%v):\n%s", err, live)
		}
	})

	if err := c.SetSecretValue(ctx, secret, []byte("shl-chap-password")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.CopyDisk(ctx, d, "vda", dst, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("adopted a %d MiB disk in %v", size>>20, time.Since(start).Round(time.Millisecond))
	// What libvirt asked of QEMU: a mirror in write-blocking mode (the
	// synchronous-writes flag).
	mirror := regexp.MustCompile(`"execute":"blockdev-mirror".*`).Find(qmpLog(t, h))
	if !bytes.Contains(mirror, []byte(`"copy-mode":"write-blocking"`)) {
		t.Fatalf("no write-blocking blockdev-mirror in libvirtd's QMP log; found: %s", mirror)
	}

	live, err := c.DomainXML(ctx, d, 0)
	if err != nil || !strings.Contains(live, "protocol='iscsi' name='"+lun.IQN+"/1'") || strings.Contains(live, "<mirror") {
		t.Fatalf("live XML after pivot (%v):\n%s", err, live)
	}
	// libvirt updates the persistent definition too (Nova's regenerated
	// XML is another matter: design.md §2).
	inactive, err := c.DomainXML(ctx, d, virt.XMLInactive)
	if err != nil || !strings.Contains(inactive, "protocol='iscsi' name='"+lun.IQN+"/1'") {
		t.Fatalf("inactive XML after pivot (%v):\n%s", err, inactive)
	}

	last, err := lab.ReadCounter(file)
	if err != nil {
		t.Fatal(err)
	}
	n := waitCounter(t, managed, last, 10*time.Second)
	n = waitCounter(t, managed, n, 10*time.Second)
	if now, err := lab.ReadCounter(file); err != nil || now != last {
		t.Fatalf("the old file still changes: counter %d -> %d (%v)", last, now, err)
	}
	t.Logf("guest counts on the LUN: file stopped at %d, LUN at %d", last, n)

	sameBeyondCounter(t, file, managed)
}
