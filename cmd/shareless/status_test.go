package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shareless/shareless/localapi"
)

// statusAgent is a Backend that answers status with a fixed document.
type statusAgent struct{ st localapi.Status }

func (statusAgent) Hook(context.Context, localapi.HookRequest) (localapi.HookResponse, error) {
	return localapi.HookResponse{}, nil
}
func (s statusAgent) Status(context.Context) (json.RawMessage, error) { return json.Marshal(s.st) }
func (statusAgent) Adopt(context.Context, string, func(localapi.Progress)) (localapi.Adoption, error) {
	return localapi.Adoption{}, errNotInTest
}
func (statusAgent) Release(context.Context, string, func(localapi.Progress)) (localapi.Adoption, error) {
	return localapi.Adoption{}, errNotInTest
}
func (statusAgent) AdoptFiles(context.Context, string, []string, func(localapi.Progress)) (localapi.Adoption, error) {
	return localapi.Adoption{}, errNotInTest
}

// CopyNow switches the remote disks of the document's instance.
func (s statusAgent) CopyNow(_ context.Context, inst string) (localapi.CopyNowResult, error) {
	res := localapi.CopyNowResult{Instance: inst}
	for _, d := range s.st.Disks {
		switch {
		case d.Instance != inst:
		case d.Mode == "remote":
			res.Switched = append(res.Switched, d.Disk)
		default:
			res.Copying = append(res.Copying, d.Disk)
		}
	}
	if res.Switched == nil && res.Copying == nil {
		return res, errors.New("instance " + inst + " has no managed disk on this host")
	}
	return res, nil
}

// TestCopyNow: status marks a remote-only disk; copy-now names the disks
// it switched, and fails on an instance without disks here.
func TestCopyNow(t *testing.T) {
	sock := serveAgent(t, statusAgent{localapi.Status{Host: "compute-2",
		Disks: []localapi.Disk{{Instance: "i-1", Disk: "disk", State: "remote", Mode: "remote", Size: 4 << 30, BytesLocal: 1 << 20}},
	}})
	code, out, errs := runCmd(t, "status", "--socket", sock)
	if want := "i-1/disk  remote (remote-only: shareless copy-now)"; code != 0 || !strings.Contains(out, want) {
		t.Fatalf("status: exit %d, stderr %q; lacks %q:\n%s", code, errs, want, out)
	}
	code, out, errs = runCmd(t, "copy-now", "--socket", sock, "i-1")
	if want := "instance i-1: copying now: disk\n"; code != 0 || out != want {
		t.Fatalf("copy-now: exit %d, stdout %q (want %q), stderr %q", code, out, want, errs)
	}
	if code, _, errs = runCmd(t, "copy-now", "--socket", sock, "i-2"); code != 1 || !strings.Contains(errs, "no managed disk") {
		t.Fatalf("copy-now of an unknown instance: exit %d, stderr %q", code, errs)
	}
	if code, _, _ = runCmd(t, "copy-now", "--socket", sock); code != 2 {
		t.Fatalf("copy-now without INSTANCE: exit %d, want 2", code)
	}
}

// runCmd runs the shareless command line args with an empty stdin.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestStatusNotSafeWhileCopying(t *testing.T) {
	sock := serveAgent(t, statusAgent{localapi.Status{Host: "compute-1",
		CopyingFromHere: []localapi.Outgoing{
			{Instance: "i-1", Dest: "compute-2", Phase: "copying", Known: true, Replicas: 2,
				Size: 4 << 30, BytesRemaining: 1 << 30, Rate: 100 << 20, ETASeconds: 10.24},
			{Instance: "i-2", Dest: "compute-3", Phase: "copying", Error: "peer compute-3: connection refused"},
		},
		Migrations: []localapi.Migration{{Instance: "i-1", Role: "source", Phase: "copying", Source: "compute-1", Dest: "compute-2"}},
		Disks:      []localapi.Disk{{Instance: "i-1", Disk: "disk", State: "complete", Sealed: true, Size: 4 << 30, BytesLocal: 4 << 30}},
	}})
	code, out, errs := runCmd(t, "status", "--socket", sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"safe to power off: no (3 replicas still copying from this host, ETA 10s)",
		"i-1 -> compute-2  copying  [###############.....]  75.0% 3.00 GiB / 4.00 GiB  100.00 MiB/s  ETA 10s",
		"i-2 -> compute-3  copying  progress unknown: peer compute-3: connection refused",
		"i-1/disk  complete sealed  [####################] 100.0%",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusSafeAndJSON(t *testing.T) {
	sock := serveAgent(t, statusAgent{localapi.Status{Host: "compute-1", SafeToPowerOff: true}})
	if code, out, _ := runCmd(t, "status", "--socket", sock); code != 0 || !strings.Contains(out, "safe to power off: yes\n") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, out, _ := runCmd(t, "status", "--json", "--socket", sock)
	var st localapi.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !st.SafeToPowerOff || st.Host != "compute-1" {
		t.Fatalf("--json: exit %d: %s", code, out)
	}
}

func TestStatusAgentDown(t *testing.T) {
	code, _, errs := runCmd(t, "status", "--socket", filepath.Join(t.TempDir(), "absent.sock"))
	if code != 1 || !strings.Contains(errs, "agent unreachable") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// TestAgentBadConfig: a bad configuration is one line naming the file,
// section and option, and exit status 2.
func TestAgentBadConfig(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "shareless.conf")
	if err := os.WriteFile(conf, []byte("[amqp]\ntransport_url = rabbit://h/\n[iscsi]\nport = 99999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"agent", "--config-file", conf}, strings.NewReader(""), &out, &errb)
	if code != 2 || strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), conf+": [iscsi] port: not a TCP port: 99999") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
