package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shareless/shareless/localapi"
)

const managedXML = `<domain><name>instance-1</name><devices>
<disk type='network' device='disk'><source protocol='iscsi' name='iqn.x:vm/0'><host name='127.0.0.1' port='3260'/></source></disk>
</devices></domain>`

const fileXML = `<domain><name>instance-2</name><devices>
<disk type='file' device='disk'><source file='/var/lib/nova/instances/x/disk'/></disk>
</devices></domain>`

// agentFunc is a Backend made of a function, for driving the hook.
type agentFunc func(context.Context, localapi.HookRequest) (localapi.HookResponse, error)

func (f agentFunc) Hook(ctx context.Context, r localapi.HookRequest) (localapi.HookResponse, error) {
	return f(ctx, r)
}
func (agentFunc) Status(context.Context) (json.RawMessage, error) { return json.RawMessage(`{}`), nil }
func (agentFunc) Adopt(context.Context, string, func(localapi.Progress)) (localapi.Adoption, error) {
	return localapi.Adoption{}, errNotInTest
}
func (agentFunc) Release(context.Context, string, func(localapi.Progress)) (localapi.Adoption, error) {
	return localapi.Adoption{}, errNotInTest
}
func (agentFunc) AdoptFiles(context.Context, string, []string, func(localapi.Progress)) (localapi.Adoption, error) {
	return localapi.Adoption{}, errNotInTest
}
func (agentFunc) CopyNow(context.Context, string) (localapi.CopyNowResult, error) {
	return localapi.CopyNowResult{}, errNotInTest
}

// errNotInTest answers the Backend methods a test's agent does not serve.
var errNotInTest = errors.New("not served by this test's agent")

func serveAgent(t *testing.T, b localapi.Backend) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { localapi.Serve(ctx, l, b); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

func runHookCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string, took time.Duration) {
	t.Helper()
	var out, errb bytes.Buffer
	start := time.Now()
	code = run(append([]string{"hook"}, args...), strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String(), time.Since(start)
}

func TestHookMigrateBeginPrintsAgentXML(t *testing.T) {
	var got localapi.HookRequest
	sock := serveAgent(t, agentFunc(func(_ context.Context, r localapi.HookRequest) (localapi.HookResponse, error) {
		got = r
		return localapi.HookResponse{XML: "<domain>rewritten</domain>"}, nil
	}))
	code, out, errs, _ := runHookCmd(t, managedXML, "--socket", sock, "qemu", "instance-1", "migrate", "begin", "-")
	if code != 0 || out != "<domain>rewritten</domain>" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if got.Domain != "instance-1" || got.Op != "migrate" || got.SubOp != "begin" || got.XML != managedXML {
		t.Fatalf("agent got %+v", got)
	}
}

func TestHookAgentRefusalAbortsWithReason(t *testing.T) {
	sock := serveAgent(t, agentFunc(func(context.Context, localapi.HookRequest) (localapi.HookResponse, error) {
		return localapi.HookResponse{}, errors.New("replica of disk 0 not ready after 30s")
	}))
	code, out, errs, _ := runHookCmd(t, managedXML, "--socket", sock, "qemu", "instance-1", "migrate", "begin", "-")
	if code == 0 || out != "" || !strings.Contains(errs, "replica of disk 0 not ready") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestHookBoundedWhenAgentHangs: the hook must never hold libvirtd longer
// than its bound, whatever the agent does.
func TestHookBoundedWhenAgentHangs(t *testing.T) {
	sock := serveAgent(t, agentFunc(func(ctx context.Context, _ localapi.HookRequest) (localapi.HookResponse, error) {
		<-ctx.Done()
		return localapi.HookResponse{}, ctx.Err()
	}))
	code, _, errs, took := runHookCmd(t, managedXML, "--socket", sock, "--timeout", "300ms", "qemu", "instance-1", "migrate", "begin", "-")
	if code == 0 || !strings.Contains(errs, "did not answer in time") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if took > 2*time.Second {
		t.Fatalf("hook held the caller for %v with a 300ms bound", took)
	}
}

func TestHookAgentDown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	state := t.TempDir()
	// A domain with a managed disk cannot migrate in without the agent.
	code, _, errs, took := runHookCmd(t, managedXML, "--socket", sock, "--state-dir", state, "qemu", "instance-1", "migrate", "begin", "-")
	if code == 0 || !strings.Contains(errs, "agent unreachable") || took > 2*time.Second {
		t.Fatalf("managed disk, agent down: exit %d, stderr %q, took %v", code, errs, took)
	}
	// Nor one whose volume only the agent can turn into an iSCSI disk.
	volumeXML := `<domain><name>instance-3</name><devices><disk type='block' device='disk'>
<source dev='/dev/disk/by-path/ip-192.0.2.7:3260-iscsi-iqn.2026-11.test:array-lun-3'/><target dev='vdb'/><serial>v1</serial>
</disk></devices></domain>`
	if code, _, errs, _ := runHookCmd(t, volumeXML, "--socket", sock, "--state-dir", state, "qemu", "instance-3", "migrate", "begin", "-"); code == 0 || !strings.Contains(errs, "agent unreachable") {
		t.Fatalf("Method A volume, agent down: exit %d, stderr %q", code, errs)
	}
	// A domain that owes nothing to the agent is left alone.
	if code, _, errs, _ := runHookCmd(t, fileXML, "--socket", sock, "--state-dir", state, "qemu", "instance-2", "prepare", "begin", "-"); code != 0 {
		t.Fatalf("unrelated domain, agent down: exit %d, stderr %q", code, errs)
	}
	// An adopted instance booting with Nova's file XML is refused.
	if err := os.MkdirAll(filepath.Join(state, "guard"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "guard", "instance-2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, _, _ := runHookCmd(t, fileXML, "--socket", sock, "--state-dir", state, "qemu", "instance-2", "prepare", "begin", "-"); code == 0 {
		t.Fatal("adopted instance started with the agent down")
	}
}

func TestHookIgnoresOtherOps(t *testing.T) {
	var calls atomic.Int32
	sock := serveAgent(t, agentFunc(func(context.Context, localapi.HookRequest) (localapi.HookResponse, error) {
		calls.Add(1)
		return localapi.HookResponse{}, nil
	}))
	if code, out, _, _ := runHookCmd(t, managedXML, "--socket", sock, "qemu", "instance-1", "started", "begin", "-"); code != 0 || out != "" {
		t.Fatalf("started: exit %d stdout %q", code, out)
	}
	if code, _, _, _ := runHookCmd(t, managedXML, "--socket", sock, "qemu", "instance-1", "release", "end", "-"); code != 0 {
		t.Fatalf("release: exit %d", code)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("agent asked %d times, want 1 (release only)", n)
	}
}

func TestHookUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"lxc", "a", "b", "c", "d"}, {"qemu", "a", "b"}, {"--bogus"}} {
		if code, _, _, _ := runHookCmd(t, "", args...); code != 2 {
			t.Errorf("hook %v: exit %d, want 2", args, code)
		}
	}
}
