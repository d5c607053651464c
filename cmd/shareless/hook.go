package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/shareless/shareless/cinderbridge"
	"github.com/shareless/shareless/localapi"
)

// Defaults shared by the agent and its clients.
const (
	defaultSocket   = "/run/shareless/agent.sock"
	defaultStateDir = "/var/lib/shareless"
)

// hookOps are the qemu hook operations the agent acts on; the others
// (started, attach, ...) return at once without asking it.
var hookOps = map[string]bool{"prepare": true, "start": true, "migrate": true, "restore": true, "release": true, "stopped": true}

const hookHelp = `usage: shareless hook [--socket PATH] [--timeout D] [--state-dir DIR] qemu NAME OP SUBOP EXTRA

libvirt's qemu hook, installed as /etc/libvirt/hooks/qemu.d/shareless. It
reads the domain XML on stdin and asks the local agent, never libvirt (libvirtd
waits for the hook). For "migrate begin" on the destination it prints the
rewritten XML, or nothing to keep libvirt's. A non-zero exit aborts the
operation; the reason goes to stderr, which libvirt logs.

If the agent does not answer, the hook refuses only operations on domains
that need it (disks served by the local agent, or instances it adopted), so
that a stopped agent never blocks unrelated VMs. It never waits longer than
--timeout.
`

func runHook(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("hook", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, hookHelp) }
	socket := fs.String("socket", defaultSocket, "agent socket")
	timeout := fs.Duration("timeout", 60*time.Second, "longest time the hook may hold libvirtd")
	stateDir := fs.String("state-dir", defaultStateDir, "agent state directory (adoption guards)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 5 || fs.Arg(0) != "qemu" {
		return usagef("want: hook qemu NAME OP SUBOP EXTRA")
	}
	req := localapi.HookRequest{Domain: fs.Arg(1), Op: fs.Arg(2), SubOp: fs.Arg(3), Extra: fs.Arg(4)}
	if !hookOps[req.Op] {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// libvirt always writes the XML; reading it is bounded by the same
	// deadline through the process's own timeout.
	raw, err := io.ReadAll(io.LimitReader(e.stdin, 8<<20))
	if err != nil {
		return fmt.Errorf("reading domain XML: %w", err)
	}
	req.XML = string(raw)
	resp, err := localapi.NewClient(*socket).Hook(ctx, req)
	if err != nil {
		if errors.Is(err, localapi.ErrAgentUnreachable) && !needsAgent(req, *stateDir) {
			return nil
		}
		return fmt.Errorf("%s %s %s: %w", req.Domain, req.Op, req.SubOp, err)
	}
	if resp.XML != "" {
		_, err = io.WriteString(e.stdout, resp.XML)
	}
	return err
}

// needsAgent reports whether a domain depends on the local agent: the
// agent serves one of its disks, left an adoption guard for it, or must
// rewrite one of its volume disks. XML that does not parse counts as
// needing it: refuse rather than guess.
func needsAgent(req localapi.HookRequest, stateDir string) bool {
	if _, err := os.Stat(filepath.Join(stateDir, "guard", filepath.Base(req.Domain))); err == nil {
		return true
	}
	served, err := localapi.ServedLocally(req.XML)
	if served || err != nil {
		return true
	}
	// A volume disk that only the agent can rewrite into an iSCSI disk
	// (Method A) would not start here without it.
	detached, err := cinderbridge.DetachedDisks([]byte(req.XML), func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	})
	return len(detached) > 0 || err != nil
}
