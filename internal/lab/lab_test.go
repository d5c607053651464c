package lab

import (
	"os"
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
