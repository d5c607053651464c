package target

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/testenv"
)

// conformanceCounts are iscsi-test-cu's verdicts, with the tests that
// only printed [SKIPPED] (CUnit counts them as passed) counted apart.
type conformanceCounts struct {
	passed, failed, skipped int
	failures                []string
}

var (
	suiteLine = regexp.MustCompile(`(?m)^Suite: (\S+)`)
	testLine  = regexp.MustCompile(`(?m)^  Test: (\S+) \.\.\.`)
	verdict   = regexp.MustCompile(`(?:^|[^\[])(passed|FAILED)(?:[^\]]|$)`)
)

// parseTestCU reads the verbose output of iscsi-test-cu.
func parseTestCU(out string) conformanceCounts {
	var c conformanceCounts
	idx := testLine.FindAllStringSubmatchIndex(out, -1)
	suites := suiteLine.FindAllStringSubmatchIndex(out, -1)
	for i, m := range idx {
		suite := ""
		for _, s := range suites {
			if s[0] < m[0] {
				suite = out[s[2]:s[3]] + "."
			}
		}
		end := len(out)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		body := out[m[1]:end]
		v := verdict.FindStringSubmatchIndex(body)
		if v == nil {
			continue
		}
		before := body[:v[2]]
		switch {
		case body[v[2]:v[3]] == "FAILED":
			c.failed++
			c.failures = append(c.failures, suite+out[m[2]:m[3]]+": "+strings.Join(strings.Fields(body[:min(len(body), 600)]), " "))
		case strings.Contains(before, "[SKIPPED]"):
			c.skipped++
		default:
			c.passed++
		}
	}
	return c
}

// runTestCU runs the SCSI and iSCSI families against url, given twice so
// that the multipath tests run too.
func runTestCU(t *testing.T, url, logFile string) conformanceCounts {
	t.Helper()
	var all strings.Builder
	for _, family := range []string{"SCSI", "iSCSI"} {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		out, err := exec.CommandContext(ctx, "iscsi-test-cu", "--dataloss", "--verbose", "--test", family, url, url).CombinedOutput()
		timedOut := ctx.Err() == context.DeadlineExceeded
		cancel()
		if timedOut {
			t.Errorf("iscsi-test-cu %s against %s timed out", family, url)
		}
		_ = err // non-zero whenever a test fails; the counts tell
		all.Write(out)
	}
	os.WriteFile(logFile, []byte(all.String()), 0o644)
	return parseTestCU(all.String())
}

// TestConformanceSideBySide runs libiscsi's conformance suite against
// `shareless export` (with CHAP) and against tgtd serving an equivalent
// file, prints both, and holds ours to at least tgt 1.0.85's result here
// (171 passed, at most 10 failed).
func TestConformanceSideBySide(t *testing.T) {
	testenv.SkipIfShort(t)
	testenv.NeedRoot(t)
	testenv.NeedCommands(t, "iscsi-test-cu", "tgtd", "tgtadm")
	dir := t.TempDir()
	bin := buildShareless(t, dir)

	oursURL := startExport(t, bin, dir, "ours.img")
	tgtURL := startTgtd(t, dir, "tgt.img")

	ours := runTestCU(t, oursURL, filepath.Join(dir, "ours.log"))
	tgt := runTestCU(t, tgtURL, filepath.Join(dir, "tgt.log"))
	testenv.Report(t, "conformance iscsi-test-cu SCSI+iSCSI: shareless passed=%d failed=%d skipped=%d | tgt passed=%d failed=%d skipped=%d",
		ours.passed, ours.failed, ours.skipped, tgt.passed, tgt.failed, tgt.skipped)
	for _, f := range ours.failures {
		testenv.Report(t, "conformance shareless FAILED %s", f)
	}
	for _, f := range tgt.failures {
		testenv.Report(t, "conformance tgt FAILED %s", f)
	}
	if tgt.passed == 0 {
		t.Errorf("tgtd passed nothing: the reference run is broken (see %s)", filepath.Join(dir, "tgt.log"))
	}
	if ours.passed < 171 || ours.failed > 10 {
		t.Errorf("shareless: %d passed, %d failed; want at least 171 passed and at most 10 failed", ours.passed, ours.failed)
	}
}

// buildShareless builds the CLI into dir.
func buildShareless(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "shareless")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/shareless/shareless/cmd/shareless").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func scratchFile(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// startExport runs `shareless export` with CHAP on a 256 MiB scratch file
// and returns the iscsi:// URL of its LUN 0.
func startExport(t *testing.T, bin, dir, name string, extra ...string) string {
	t.Helper()
	img := filepath.Join(dir, name)
	scratchFile(t, img, 256<<20)
	secretFile := filepath.Join(dir, name+".secret")
	os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600)
	port := testenv.FreePort(t)
	iqn := "iqn.2026-11.org.shareless:" + strings.TrimSuffix(name, ".img")
	args := append([]string{"export", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--iqn", iqn,
		"--chap-user", testUser, "--chap-secret-file", secretFile}, extra...)
	cmd := exec.Command(bin, append(args, img)...)
	logf, _ := os.Create(filepath.Join(dir, name+".export.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("shareless export exited with %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("shareless export did not stop on SIGINT")
		}
		logf.Close()
	})
	waitPort(t, port)
	return fmt.Sprintf("iscsi://%s%%%s@127.0.0.1:%d/%s/0", testUser, testSecret, port, iqn)
}

// startTgtd runs a private tgtd (control port in 100..149, its own portal)
// serving an equivalent scratch file with the same CHAP account, and
// returns the URL of that LUN (tgt's LUN 0 is its controller, so LUN 1).
func startTgtd(t *testing.T, dir, name string) string {
	t.Helper()
	img := filepath.Join(dir, name)
	scratchFile(t, img, 256<<20)
	port := testenv.FreePort(t)
	for ctl := 100; ctl < 150; ctl++ {
		cmd := exec.Command("tgtd", "-f", "-C", fmt.Sprint(ctl), "--iscsi", fmt.Sprintf("portal=127.0.0.1:%d", port))
		logf, _ := os.Create(filepath.Join(dir, fmt.Sprintf("tgtd-%d.log", ctl)))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); logf.Close(); close(exited) }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		time.Sleep(300 * time.Millisecond)
		select {
		case <-exited:
			continue // control port taken by another tgtd
		default:
		}
		adm := func(args ...string) error {
			out, err := exec.Command("tgtadm", append([]string{"-C", fmt.Sprint(ctl), "--lld", "iscsi"}, args...)...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("tgtadm %v: %v: %s", args, err, out)
			}
			return nil
		}
		iqn := "iqn.2026-11.org.tgt:" + strings.TrimSuffix(name, ".img")
		for _, a := range [][]string{
			{"--mode", "target", "--op", "new", "--tid", "1", "--targetname", iqn},
			{"--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1", "--backing-store", img},
			{"--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL"},
			{"--mode", "account", "--op", "new", "--user", testUser, "--password", testSecret},
			{"--mode", "account", "--op", "bind", "--tid", "1", "--user", testUser},
		} {
			if err := adm(a...); err != nil {
				stop()
				t.Fatal(err)
			}
		}
		t.Cleanup(stop)
		waitPort(t, port)
		return fmt.Sprintf("iscsi://%s%%%s@127.0.0.1:%d/%s/1", testUser, testSecret, port, iqn)
	}
	t.Fatal("no free tgtd control port in 100..149")
	return ""
}

// TestExportLUNOrder: `shareless export` serves its FILEs as LUN 0, 1, ...
// in the order given, as QEMU sees them.
func TestExportLUNOrder(t *testing.T) {
	testenv.NeedCommands(t, "qemu-img")
	dir := t.TempDir()
	bin := buildShareless(t, dir)
	second := filepath.Join(dir, "second.img")
	scratchFile(t, second, 8<<20)
	// startExport puts its own 256 MiB image last: LUN 0 is the 8 MiB file.
	url := startExport(t, bin, dir, "order.img", second)
	for lun, want := range map[string]string{"0": "8 MiB", "1": "256 MiB"} {
		u := strings.TrimSuffix(url, "/0") + "/" + lun
		out, err := exec.Command("qemu-img", "info", u).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "virtual size: "+want) {
			t.Errorf("LUN %s: want %s: %v\n%s", lun, want, err, out)
		}
	}
}
