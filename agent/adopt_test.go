package agent

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/lab"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/localapi"
	"github.com/shareless/shareless/virt"
)

// TestAdoptRelease runs a real agent (the binary, inside a lab host, with
// the real `shareless hook` installed in libvirtd) and adopts running
// guests whose disk is a raw file and a qcow2 file: the live XML moves to
// the managed disk on 127.0.0.1 with the CHAP secret, the guest counts on
// the store's image, and the guard holds. A start with Nova's file XML is
// refused by the hook; a start on the managed disk is allowed. Release
// brings the guest back onto its file, with the data, and removes the
// guard and the store disk.
func TestAdoptRelease(t *testing.T) {
	testenv.SkipIfShort(t)
	testenv.NeedCommands(t, "qemu-img")
	needBinary(t)
	// Short paths: the socket must fit a sockaddr_un.
	base, err := os.MkdirTemp("", "shl-adopt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	sock, state, store := filepath.Join(base, "agent.sock"), filepath.Join(base, "state"), filepath.Join(base, "store")
	hookScript := fmt.Sprintf("#!/bin/sh\nexec %s hook --socket %s --state-dir %s --timeout 20s qemu \"$@\"\n", shared.bin, sock, state)
	l := lab.Start(t, lab.Options{Hosts: 1, Hooks: map[string][]byte{"shareless": []byte(hookScript)}})
	h := l.A()

	chap := filepath.Join(base, "chap")
	if err := os.WriteFile(chap, []byte(testCHAP+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(base, "shareless.conf")
	// No broker: the agent's consumer retries in the background, which
	// adoption does not need.
	if err := os.WriteFile(conf, fmt.Appendf(nil, `[DEFAULT]
host = %s
state_path = %s
log_level = debug

[amqp]
transport_url = rabbit://guest:guest@127.0.0.1:1/

[iscsi]
listen = 127.0.0.1
port = 3260
chap_user = shareless
chap_secret_file = %s

[store]
path = %s

[libvirt]
uri = %s

[api]
listen = 127.0.0.1:%d
socket = %s
`, h.Hostname, state, chap, store, h.URI(), testenv.FreePort(t), sock), 0o600); err != nil {
		t.Fatal(err)
	}
	agent, err := h.Spawn(shared.bin, "agent", "--config-file", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(agent.Log)
			t.Logf("agent log:\n%s", tail(string(b), 80))
		}
	})
	c, err := virt.Connect(t.Context(), virt.Config{URI: h.URI(), Logger: lab.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	testenv.Eventually(t, 30*time.Second, "agent answers and defined the CHAP secret", func() (bool, string) {
		if _, err := localapi.NewClient(sock).Status(t.Context()); err != nil {
			return false, err.Error()
		}
		_, err := c.LookupISCSISecret(t.Context(), SecretUsage)
		return err == nil, fmt.Sprint(err)
	})

	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) { adoptAndRelease(t, l, c, format, sock, state, store) })
	}
}

func adoptAndRelease(t *testing.T, l *lab.Lab, c *virt.Conn, format, sock, state, store string) {
	ctx := t.Context()
	const size = 32 << 20
	// The guest writes its counter to sector 0; the rest holds data that
	// must survive both copies.
	data := make([]byte, 8<<20)
	rand.Read(data)
	raw := filepath.Join(l.Dir, format+"-data.raw")
	if err := os.WriteFile(raw, append(make([]byte, 512), data...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, size); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(l.Dir, "disk-"+format)
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", format, raw, file).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	name := "shl-" + l.ID + "-" + format
	fileXML := strings.Replace(l.Guest.DomainXML(name, l.ConsoleLog(name), lab.Disk{Target: "vda", File: file}),
		"type='raw'", "type='"+format+"'", 1)
	d, err := c.DefineDomain(ctx, fileXML)
	if err != nil {
		t.Fatal(err)
	}
	// What Nova would define again on hard reboot: the file disk, with
	// the instance's UUID.
	if fileXML, err = c.DomainXML(ctx, d, virt.XMLInactive); err != nil {
		t.Fatal(err)
	}
	refused(t, sock, "not running", "adopt", name)
	if err := c.StartDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConsole(l.ConsoleLog(name), lab.BootMarker, 60*time.Second); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	code, out, stderr, _ := shareless(t, "", "adopt", "--socket", sock, "--json", name)
	if code != 0 {
		t.Fatalf("adopt: exit %d: %s", code, stderr)
	}
	var ad localapi.Adoption
	if err := json.Unmarshal([]byte(out), &ad); err != nil || len(ad.Disks) != 1 {
		t.Fatalf("adopt printed %q (%v)", out, err)
	}
	testenv.Report(t, "adopted a %d MiB %s disk in %v", size>>20, format, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(stderr, "100.0%") {
		t.Errorf("adopt showed no progress to 100%%:\n%s", stderr)
	}
	ds := ad.Disks[0]
	// A raw file on the store's mount is adopted by hard link; qcow2 is
	// copied.
	linked := format == "raw"
	if ds.Target != "vda" || ds.File != file || ds.Format != format || ds.Size != size || ds.Disk != "disk-"+format || ds.Linked != linked {
		t.Fatalf("adoption record %+v", ds)
	}
	checkManagedXML(t, c, d, ds)
	guard := filepath.Join(state, "guard", name)
	if _, err := os.Stat(guard); err != nil {
		t.Fatalf("no adoption guard: %v", err)
	}
	refused(t, sock, "already adopted", "adopt", ad.Instance)

	image := filepath.Join(store, ad.Instance+"."+ds.Disk, "image")
	var n uint64
	if linked {
		n = adoptedByLink(t, c, d, sock, fileXML, file, image, guard, data)
	} else {
		n = adoptedByCopy(t, c, d, fileXML, file, image, data)
	}

	code, out, stderr, _ = shareless(t, "", "release", "--socket", sock, name)
	if code != 0 {
		t.Fatalf("release: exit %d: %s", code, stderr)
	}
	t.Logf("release: %s", strings.TrimSpace(out))
	d, err = c.LookupDomain(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	live, err := c.DomainXML(ctx, d, 0)
	if err != nil || !strings.Contains(live, "<source file='"+file+"'") {
		t.Fatalf("live XML after release (%v):\n%s", err, live)
	}
	if _, err := os.Stat(guard); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("guard after release: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(image)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("store disk after release: %v", err)
	}
	// The file has the guest's data and its counter moves on from where
	// the managed disk was.
	testenv.Eventually(t, 10*time.Second, "the guest counts on its file again", func() (bool, string) {
		m := fileCounter(t, file, format)
		return m > n, fmt.Sprintf("counter %d, was %d on the managed disk", m, n)
	})
	if format == "raw" {
		sameData(t, file, data)
	}
	refused(t, sock, "not adopted", "release", name)
}

// checkManagedXML fails the test unless d's live disk ds.Target is its
// managed disk on 127.0.0.1 with the CHAP secret.
func checkManagedXML(t *testing.T, c *virt.Conn, d virt.Domain, ds localapi.AdoptedDisk) {
	t.Helper()
	live, err := c.DomainXML(t.Context(), d, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"protocol='iscsi' name='" + ds.IQN + "/0'", "<host name='127.0.0.1' port='3260'/>",
		"<auth username='shareless'>", "<secret type='iscsi' usage='" + SecretUsage + "'/>"} {
		if !strings.Contains(live, want) {
			t.Fatalf("live XML lacks %s:\n%s", want, live)
		}
	}
}

// adoptedByLink: the store's image is Nova's file (one inode), so the
// file is the live data. Nova's hard reboot (the domain defined again with
// its file disk) starts: the hook hands the disk back to Nova and the
// guest boots on the file with its data; once it runs, the agent adopts it
// again ([libvirt] readopt, on by default), by link. Returns the guest's
// counter on the managed disk.
func adoptedByLink(t *testing.T, c *virt.Conn, d virt.Domain, sock, fileXML, file, image, guard string, data []byte) uint64 {
	ctx := t.Context()
	if a, b := statFile(t, image), statFile(t, file); !os.SameFile(a, b) {
		t.Fatal("the store's image is not Nova's file")
	}
	n := waitCounter(t, image, 0)
	n = waitCounter(t, file, n)
	sameData(t, file, data)
	if err := c.DestroyDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	d, err := c.DefineDomain(ctx, fileXML)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartDomain(ctx, d); err != nil {
		t.Fatalf("start on the linked file: %v; want the hook to hand the disk back", err)
	}
	testenv.Eventually(t, 60*time.Second, "the restarted guest counts on its file", func() (bool, string) {
		m, err := lab.ReadCounter(file)
		return err == nil && m < n, fmt.Sprintf("counter %d, %d before the restart (%v)", m, n, err)
	})
	var ad localapi.Adoption
	testenv.Eventually(t, 60*time.Second, "the agent adopts the restarted guest again", func() (bool, string) {
		b, err := os.ReadFile(guard)
		if err != nil || json.Unmarshal(b, &ad) != nil || len(ad.Disks) != 1 {
			return false, fmt.Sprintf("guard %q: %v", b, err)
		}
		live, err := c.DomainXML(ctx, d, 0)
		return err == nil && strings.Contains(live, "name='"+ad.Disks[0].IQN+"/0'"), live
	})
	if !ad.Disks[0].Linked {
		t.Fatalf("adopted again by copy: %+v", ad.Disks[0])
	}
	checkManagedXML(t, c, d, ad.Disks[0])
	if a, b := statFile(t, image), statFile(t, file); !os.SameFile(a, b) {
		t.Fatal("adopted again: the store's image is not Nova's file")
	}
	sameData(t, file, data)
	refused(t, sock, "already adopted", "adopt", d.Name)
	return waitCounter(t, image, 0)
}

// adoptedByCopy: the guest counts on the store's image and Nova's file no
// longer moves. Nova's hard reboot (the domain defined again with its file
// disk) is refused by the hook; on the managed disk it starts. Returns the
// guest's counter on the managed disk.
func adoptedByCopy(t *testing.T, c *virt.Conn, d virt.Domain, fileXML, file, image string, data []byte) uint64 {
	ctx := t.Context()
	format := "qcow2"
	frozen := fileCounter(t, file, format)
	n := waitCounter(t, image, 0)
	waitCounter(t, image, n)
	if now := fileCounter(t, file, format); now != frozen {
		t.Fatalf("Nova's file still changes: counter %d -> %d", frozen, now)
	}
	sameData(t, image, data)
	managedXML, err := c.DomainXML(ctx, d, virt.XMLInactive)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DestroyDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	if d, err = c.DefineDomain(ctx, fileXML); err != nil {
		t.Fatal(err)
	}
	err = c.StartDomain(ctx, d)
	if !errors.Is(err, virt.ErrHookFailed) || !strings.Contains(err.Error(), "was adopted by shareless") {
		t.Fatalf("start on the adopted file: %v; want the hook's refusal", err)
	}
	t.Logf("refused: %v", err)
	if d, err = c.DefineDomain(ctx, managedXML); err != nil {
		t.Fatal(err)
	}
	before, err := lab.ReadCounter(image)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartDomain(ctx, d); err != nil {
		t.Fatalf("start on the managed disk: %v", err)
	}
	// The guest counts from 1 again after a boot: on the managed disk.
	testenv.Eventually(t, 60*time.Second, "the restarted guest counts on the managed disk", func() (bool, string) {
		n, err = lab.ReadCounter(image)
		return err == nil && n < before, fmt.Sprintf("counter %d, %d before the restart (%v)", n, before, err)
	})
	n = waitCounter(t, image, n)
	if now := fileCounter(t, file, format); now != frozen {
		t.Fatalf("the restarted guest writes Nova's file: counter %d -> %d", frozen, now)
	}
	return n
}

func statFile(t *testing.T, name string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// refused runs the CLI command on server and expects it to fail with
// want in its message.
func refused(t *testing.T, sock, want, command, server string) {
	t.Helper()
	if code, _, stderr, _ := shareless(t, "", command, "--socket", sock, server); code != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("%s %s: exit %d, %q; want exit 1 and %q", command, server, code, stderr, want)
	}
}

// fileCounter reads the guest's counter from a raw or qcow2 file (qcow2
// through qemu-img, sharing the file with the running QEMU).
func fileCounter(t *testing.T, file, format string) uint64 {
	t.Helper()
	if format == "qcow2" {
		rawCopy := file + ".raw"
		defer os.Remove(rawCopy)
		if out, err := exec.Command("qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", file, rawCopy).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img convert: %v\n%s", err, out)
		}
		file = rawCopy
	}
	n, err := lab.ReadCounter(file)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitCounter waits until image's counter passes after and returns it.
func waitCounter(t *testing.T, image string, after uint64) uint64 {
	t.Helper()
	var n uint64
	testenv.Eventually(t, 15*time.Second, "guest counter on "+image, func() (bool, string) {
		var err error
		n, err = lab.ReadCounter(image)
		return err == nil && n > after, fmt.Sprintf("counter %d, want > %d (%v)", n, after, err)
	})
	return n
}

// sameData fails the test unless image holds data after its first sector.
func sameData(t *testing.T, image string, data []byte) {
	t.Helper()
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 512); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%s does not hold the guest's data (%v)", image, err)
	}
}

// TestUsesManaged: release copies back only a disk that runs on its
// managed disk; one still on its file (an adoption interrupted before its
// pivot) is only forgotten; anything else is left alone.
func TestUsesManaged(t *testing.T) {
	ds := localapi.AdoptedDisk{Target: "vda", File: "/n/disk", IQN: "iqn.x:i.disk"}
	for _, tc := range []struct {
		live    virt.DiskInfo
		managed bool
		err     string
	}{
		{virt.DiskInfo{Target: "vda", Type: "network", Protocol: "iscsi", Name: "iqn.x:i.disk/0"}, true, ""},
		{virt.DiskInfo{Target: "vda", Type: "file", File: "/n/disk"}, false, ""},
		{virt.DiskInfo{Target: "vda", Type: "file", File: "/elsewhere"}, false, "neither"},
		{virt.DiskInfo{Target: "vdb", Type: "file", File: "/n/disk"}, false, "no disk vda"},
	} {
		managed, err := usesManaged([]virt.DiskInfo{tc.live}, ds)
		if managed != tc.managed || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v: %t, %v; want %t, %q", tc.live, managed, err, tc.managed, tc.err)
		}
	}
}
