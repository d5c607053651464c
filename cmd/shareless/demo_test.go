package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/shareless/shareless/internal/testenv"
)

// TestDemo runs the README's demo on a small disk and checks what it
// claims: both images verified, and the way back moving exactly the
// modified set, far less than the disk.
func TestDemo(t *testing.T) {
	testenv.NeedCommands(t, "qemu-io")
	var out, errb bytes.Buffer
	code := run([]string{"demo", "--dir", t.TempDir(), "--size", "67108864", "--rate", "16777216"}, strings.NewReader(""), &out, &errb)
	t.Logf("demo output:\n%s", out.String())
	if code != 0 {
		t.Fatalf("demo exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"plan full", "plan incremental", "B: image verified", "A: image verified equal to B's"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	m := regexp.MustCompile(`moved (\S+ \S+) of a 64.00 MiB disk \(([0-9.]+)%\); the modified set is (\S+ \S+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatal("no way-back line in the demo output")
	}
	if m[1] != m[3] {
		t.Errorf("way back moved %s, but the modified set is %s", m[1], m[3])
	}
	// 1% of the disk in scattered 4 KiB writes touches at most 4% of it at
	// the 16 KiB grain.
	if pct, err := strconv.ParseFloat(m[2], 64); err != nil || pct > 4 {
		t.Errorf("way back moved %s%% of the disk, want at most 4%%", m[2])
	}
}
