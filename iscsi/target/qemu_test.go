package target

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shareless/shareless/internal/testenv"
)

// qemuTarget serves a fresh CHAP-protected 64 MiB LUN to QEMU's libiscsi
// and returns its URL.
func qemuTarget(t *testing.T) string {
	testenv.NeedCommands(t, "qemu-img", "qemu-io")
	_, addr := startTarget(t, testConfig(t))
	return fmt.Sprintf("iscsi://%s%%%s@%s/%s/0", testUser, testSecret, addr, testIQN)
}

// run runs a command and returns its standard output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// qemuIO runs qemu-io commands and fails on any reported failure
// (qemu-io exits 0 even when a pattern does not verify).
func qemuIO(t *testing.T, url string, cmds ...string) string {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, url)...)
	if strings.Contains(out, "failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io %v:\n%s", cmds, out)
	}
	return out
}

// TestQEMUConvertAndCompare: qemu-img convert -n of an image that is
// mostly zeroes onto a LUN full of garbage, then qemu-img compare. The
// zero regions go as WRITE SAME/UNMAP and must really read back as zero.
func TestQEMUConvertAndCompare(t *testing.T) {
	url := qemuTarget(t)
	src := filepath.Join(t.TempDir(), "src.img")
	scratchFile(t, src, 64<<20)
	f, _ := os.OpenFile(src, os.O_RDWR, 0)
	for _, off := range []int64{0, 5 << 20, 33<<20 + 4096, 64<<20 - 1<<20} {
		f.WriteAt(bytes.Repeat([]byte{byte(off >> 20), 0x5a, 0xa5, 7}, 1<<18), off)
	}
	f.Close()
	qemuIO(t, url, "write -P 0xaa 0 64M")
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, url)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, url)
}

// TestQEMUWriteZeroes: qemu-io write -z really zeroes (WRITE SAME), with
// and without unmapping, and leaves the neighbours alone.
func TestQEMUWriteZeroes(t *testing.T) {
	url := qemuTarget(t)
	qemuIO(t, url, "write -P 0x55 0 4M", "write -z 1M 1M", "write -z -u 2M 1M")
	qemuIO(t, url, "read -P 0x55 0 1M", "read -P 0 1M 2M", "read -P 0x55 3M 1M")
}

// TestQEMUIdleSession: a session idle for 30 s (QEMU pings with
// non-immediate NOP-Outs every few seconds, the target with NOP-Ins)
// still does I/O: the hang gotgt had.
func TestQEMUIdleSession(t *testing.T) {
	testenv.SkipIfShort(t)
	url := qemuTarget(t)
	qemuIO(t, url, "write -P 0x33 0 64k", "sleep 30000", "read -P 0x33 0 64k", "write -P 0x44 64k 64k", "read -P 0x44 64k 64k")
}

// TestQEMUMapSparse: qemu-img map sees the allocation of a sparse LUN
// through GET LBA STATUS, and compare agrees with a local sparse copy.
func TestQEMUMapSparse(t *testing.T) {
	url := qemuTarget(t)
	qemuIO(t, url, "write -P 0x11 1M 1M", "write -P 0x22 40M 512k")
	out := run(t, "qemu-img", "map", "--output=json", "-f", "raw", url)
	var extents []struct {
		Start, Length int64
		Data, Zero    bool
	}
	if err := json.Unmarshal([]byte(out), &extents); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var data [][2]int64
	for _, e := range extents {
		if e.Data && !e.Zero {
			data = append(data, [2]int64{e.Start, e.Length})
		}
	}
	want := [][2]int64{{1 << 20, 1 << 20}, {40 << 20, 512 << 10}}
	if fmt.Sprint(data) != fmt.Sprint(want) {
		t.Errorf("allocated extents %v, want %v\n%s", data, want, out)
	}
	local := filepath.Join(t.TempDir(), "local.img")
	scratchFile(t, local, 64<<20)
	qemuIO(t, local, "write -P 0x11 1M 1M", "write -P 0x22 40M 512k")
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", local, url)
}
