package main

import (
	"io"
	"log/slog"
	"testing"
)

// newTestDemo is the demo's set-up without its output: a demo of size
// bytes under dir, its shared CHAP secret, and one host per name, each
// with a store and no disk yet.
func newTestDemo(t *testing.T, dir string, size int64, names ...string) (*demo, []*host) {
	t.Helper()
	d := &demo{out: io.Discard, log: slog.New(slog.DiscardHandler), dir: dir, size: size}
	if err := d.makeSecret(); err != nil {
		t.Fatal(err)
	}
	hosts := make([]*host, len(names))
	for i, name := range names {
		h, err := d.newHost(name)
		if err != nil {
			t.Fatal(err)
		}
		hosts[i] = h
	}
	return d, hosts
}

// serveForTest serves h's disk until the test ends.
func serveForTest(t *testing.T, d *demo, h *host) {
	t.Helper()
	if err := h.serve(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.stop)
}

// emptyBase gives h an empty sealed disk of size bytes: the base of a
// full copy, holding nothing.
func emptyBase(t *testing.T, h *host, size int64) {
	t.Helper()
	var err error
	if h.disk, err = h.store.Create(t.Context(), demoDisk, size); err != nil {
		t.Fatal(err)
	}
	if err := h.disk.Seal(t.Context()); err != nil {
		t.Fatal(err)
	}
}
