package initiator

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want URL
	}{
		{"iscsi://host/iqn.2026-01.org.x:disk/0", URL{Host: "host", Port: 3260, Target: "iqn.2026-01.org.x:disk"}},
		{"iscsi://10.0.0.1:3261/iqn.a:b/7", URL{Host: "10.0.0.1", Port: 3261, Target: "iqn.a:b", LUN: 7}},
		{"iscsi://user@h:1/iqn.a:b/1", URL{User: "user", Host: "h", Port: 1, Target: "iqn.a:b", LUN: 1}},
		{"iscsi://user%pass%word@h/iqn.a:b/1", URL{User: "user", Password: "pass%word", Host: "h", Port: 3260, Target: "iqn.a:b", LUN: 1}},
		{"iscsi://[fe80::1]:3262/iqn.a:b/16383", URL{Host: "fe80::1", Port: 3262, Target: "iqn.a:b", LUN: 16383}},
		{"iscsi://[::1]/eui.0123456789abcdef/2", URL{Host: "::1", Port: 3260, Target: "eui.0123456789abcdef", LUN: 2}},
	} {
		got, err := ParseURL(tc.in)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.in, err)
			continue
		}
		if *got != tc.want {
			t.Errorf("ParseURL(%q) = %+v, want %+v", tc.in, *got, tc.want)
		}
	}
	for _, bad := range []string{
		"", "http://h/iqn.a:b/0", "iscsi://", "iscsi://h", "iscsi://h/", "iscsi://h/iqn.a:b",
		"iscsi://h/iqn.a:b/", "iscsi://h/iqn.a:b/x", "iscsi://h/iqn.a:b/16384", "iscsi://h/iqn.a:b/-1",
		"iscsi://h:0/iqn.a:b/0", "iscsi://h:99999/iqn.a:b/0", "iscsi://@h/iqn.a:b/0", "iscsi://[::1/iqn.a:b/0",
		"iscsi://[nothex]/iqn.a:b/0", "iscsi://h/iqn.a:b/0?x=1", "iscsi://h/iqn a:b/0", "iscsi:///iqn.a:b/0",
		"iscsi://u%secret@h:x/iqn.a:b/0",
	} {
		if u, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) = %+v, want an error", bad, u)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseURL(%q) error reveals the password: %v", bad, err)
		}
	}
}

func TestURLStringHidesPassword(t *testing.T) {
	u, err := ParseURL("iscsi://alice%s3cret-pass@[::1]:3270/iqn.a:b/3")
	if err != nil {
		t.Fatal(err)
	}
	if s := u.String(); s != "iscsi://alice@[::1]:3270/iqn.a:b/3" {
		t.Errorf("String() = %q", s)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"iscsi://u%pw@h/iqn.a:b/0":     "iscsi://u%<redacted>@h/iqn.a:b/0",
		"iscsi://u%p%w@h:1/bad":        "iscsi://u%<redacted>@h:1/bad",
		"iscsi://u@h/iqn.a:b/0":        "iscsi://u@h/iqn.a:b/0",
		"iscsi://u%pw@":                "iscsi://u%<redacted>@",
		"/var/lib/images/disk%0@1.img": "/var/lib/images/disk%0@1.img",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseURL: any input parses or fails without panicking, and what
// parses renders back (without the password) to a URL that parses the same.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"iscsi://host/iqn.2026-01.org.x:disk/0", "iscsi://u%p@h:3261/iqn.a:b/7",
		"iscsi://[fe80::1]:3262/iqn.a:b/16383", "iscsi://h/a/b/c/1", "iscsi://@/x/0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURL(s)
		if err != nil {
			return
		}
		// The password must leave the authority; the path may hold the same
		// characters (a target named "%0@") without leaking anything.
		if r, err := ParseURL(Redact(s)); u.Password != "" && (err != nil || r.Password != "<redacted>") {
			t.Fatalf("Redact(%q) = %q keeps the password or breaks the URL", s, Redact(s))
		}
		again, err := ParseURL(u.String())
		if err != nil {
			t.Fatalf("%q parsed, but its String %q does not: %v", s, u.String(), err)
		}
		u.Password = ""
		if *again != *u {
			t.Fatalf("round trip of %q: %+v != %+v", s, *again, *u)
		}
	})
}
