package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExportUsageErrors: a missing file, a bad address or a missing
// secret gives one line on stderr and exit status 2, before serving.
func TestExportUsageErrors(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("0123456789abcdef\n"), 0o600)
	base := []string{"export", "--listen", "127.0.0.1:0", "--iqn", "iqn.2026-11.org.shareless:t"}
	chap := []string{"--chap-user", "u", "--chap-secret-file", secret}
	cases := map[string][]string{
		"missing file":     append(append(append([]string{}, base...), chap...), filepath.Join(dir, "nope.img")),
		"bad address":      {"export", "--listen", "300.1.2.3:99999", "--iqn", "iqn.2026-11.org.shareless:t", "--no-auth", img},
		"missing secret":   append(append([]string{}, base...), "--chap-user", "u", "--chap-secret-file", filepath.Join(dir, "nope"), img),
		"no auth":          append(append([]string{}, base...), img),
		"short secret":     append(append([]string{}, base...), "--chap-user", "u", "--chap-secret-file", img+"x", img),
		"no file":          append(append([]string{}, base...), chap...),
		"user, no secret":  append(append([]string{}, base...), "--chap-user", "u", img),
		"bad iqn":          {"export", "--listen", "127.0.0.1:0", "--iqn", "target1", "--no-auth", img},
		"auth and no-auth": append(append(append([]string{}, base...), chap...), "--no-auth", img),
	}
	for name, args := range cases {
		var stdout, stderr bytes.Buffer
		code := run(args, strings.NewReader(""), &stdout, &stderr)
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "shareless export: ") {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 and one line", name, code, stderr.String())
		}
	}
}
