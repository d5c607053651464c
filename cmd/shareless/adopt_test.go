package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/shareless/shareless/localapi"
)

// adoptAgent answers adopt with progress and a fixed record, and release
// with an error.
type adoptAgent struct{ statusAgent }

var testAdoption = localapi.Adoption{Instance: "11111111-2222-3333-4444-555555555555", Domain: "instance-1",
	Disks: []localapi.AdoptedDisk{{Target: "vda", File: "/var/lib/nova/instances/x/disk", Format: "qcow2",
		Disk: "disk", IQN: "iqn.2026-11.io.shareless:x.disk", Size: 1 << 30}}}

func (adoptAgent) Adopt(_ context.Context, server string, progress func(localapi.Progress)) (localapi.Adoption, error) {
	if server != "instance-1" {
		return localapi.Adoption{}, errors.New("no domain named " + server)
	}
	for done := uint64(0); done <= 100; done += 10 {
		progress(localapi.Progress{Target: "vda", Done: done << 20, Total: 100 << 20})
	}
	return testAdoption, nil
}

func (adoptAgent) Release(context.Context, string, func(localapi.Progress)) (localapi.Adoption, error) {
	return localapi.Adoption{}, errors.New("instance x is migrating")
}

func TestAdoptStreamsProgressAndRecord(t *testing.T) {
	sock := serveAgent(t, adoptAgent{})
	code, out, errb := runCmd(t, "adopt", "--socket", sock, "--json", "instance-1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	var got localapi.Adoption
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Disks[0].IQN != testAdoption.Disks[0].IQN {
		t.Fatalf("--json printed %q (%v)", out, err)
	}
	if n := strings.Count(errb, "vda: ["); n != 11 || !strings.Contains(errb, "100.0%") {
		t.Fatalf("want 11 progress lines ending at 100%%, got:\n%s", errb)
	}
	code, out, _ = runCmd(t, "adopt", "--socket", sock, "instance-1")
	if code != 0 || !strings.Contains(out, "vda  /var/lib/nova/instances/x/disk (qcow2)") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}

func TestAdoptionErrors(t *testing.T) {
	sock := serveAgent(t, adoptAgent{})
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"adopt", "--socket", sock, "nope"}, 1, "no domain named nope"},
		{[]string{"release", "--socket", sock, "instance-1"}, 1, "is migrating"},
		{[]string{"adopt", "--socket", sock}, 2, "want one SERVER"},
		{[]string{"release", "--socket", sock + ".gone", "instance-1"}, 1, "agent unreachable"},
	} {
		code, _, errb := runCmd(t, c.args...)
		if code != c.code || !strings.Contains(errb, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", c.args, code, errb, c.code, c.want)
		}
	}
}
