package lab

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/testenv"
)

// TestTwoHosts checks the lab's promises: each host has its own hostname
// and libvirt configuration inside its namespaces, and reaches the other
// host's libvirtd over the lab network (the path of a p2p migration).
func TestTwoHosts(t *testing.T) {
	testenv.SkipIfShort(t)
	l := Start(t, Options{Hooks: map[string][]byte{"probe": []byte("#!/bin/sh\nexit 0\n")}})
	a, b := l.A(), l.B()
	for _, h := range l.Hosts {
		out, err := h.Command(t.Context(), "sh", "-c", "hostname; grep host_uuid /etc/libvirt/libvirtd.conf; ls /etc/libvirt/hooks/qemu.d").CombinedOutput()
		if err != nil {
			t.Fatalf("host %s: %v: %s", h.Name, err, out)
		}
		want := h.Hostname + "\nhost_uuid = \"" + h.UUID + "\"\nprobe\n"
		if string(out) != want {
			t.Fatalf("host %s sees\n%s\nwant\n%s", h.Name, out, want)
		}
	}
	out, err := a.Command(t.Context(), "virsh", "-c", b.MigrationURI(), "hostname").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != b.Hostname {
		t.Fatalf("from a, %s answers %q, %v; want %s", b.MigrationURI(), out, err, b.Hostname)
	}

	// A program under test runs in the host and dies by SIGKILL.
	p, err := b.Spawn("sh", "-c", "hostname; exec sleep 600")
	if err != nil {
		t.Fatal(err)
	}
	err = waitFor(5*time.Second, 20*time.Millisecond, func() (bool, error) {
		b, err := os.ReadFile(p.Log)
		return string(b) == l.B().Hostname+"\n", err
	})
	if err != nil {
		t.Fatalf("spawned program: %v: %s", err, tail(p.Log, 3))
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("stopping an exited process: %v", err)
	}
}

// TestSSH checks Options.SSH as Nova uses it between computes: root on
// each host runs a command on the other with `ssh -o BatchMode=yes ADDR`
// (no question, no password) and copies a file there with scp, which
// lands in the other host's private view of the filesystem only.
func TestSSH(t *testing.T) {
	testenv.SkipIfShort(t)
	l := Start(t, Options{SSH: true})
	a, b := l.A(), l.B()
	for _, pair := range [][2]*Host{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		out, err := from.Command(t.Context(), "ssh", "-o", "BatchMode=yes", to.Addr.String(), "hostname").CombinedOutput()
		if err != nil || string(out) != to.Hostname+"\n" {
			t.Fatalf("ssh from %s to %s: %q, %v; want %s", from.Name, to.Name, out, err, to.Hostname)
		}
	}
	const inside = "/var/lib/libvirt/ssh-probe" // DIR/lib of each host
	data := []byte(randomHex(4096))
	if err := os.WriteFile(filepath.Join(a.Dir, "lib", "ssh-probe"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := a.Command(t.Context(), "scp", inside, b.Addr.String()+":"+inside).CombinedOutput(); err != nil {
		t.Fatalf("scp from a to b: %v: %s", err, out)
	}
	if got, err := os.ReadFile(filepath.Join(b.Dir, "lib", "ssh-probe")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("b's copy: %d bytes (%v), want the %d scp sent", len(got), err, len(data))
	}
	if _, err := os.Stat(inside); !os.IsNotExist(err) {
		t.Fatalf("the copy reached the machine's own %s: %v", inside, err)
	}
}
