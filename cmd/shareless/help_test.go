package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

var sectionTitles = []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "FILES"}

// sections splits a manual page into its sections, by title.
func sections(t *testing.T, out string) map[string]string {
	t.Helper()
	got := map[string]string{}
	var title string
	var order []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" && !strings.HasPrefix(l, " ") {
			title = l
			order = append(order, l)
			continue
		}
		got[title] += strings.TrimSpace(l) + "\n"
	}
	for k, v := range got {
		got[k] = strings.TrimSpace(v) + "\n"
	}
	if strings.Join(order, ",") != strings.Join(sectionTitles, ",") {
		t.Errorf("sections %q, want %q", order, sectionTitles)
	}
	return got
}

var flagRE = regexp.MustCompile(`(?:^|[\s\[])(--?[a-z][a-z-]*)`)

// TestHelpEveryCommand: every command of the table has a manual with all
// its sections; the synopsis and description are the command's own usage
// text, and every flag the synopsis names is under OPTIONS.
func TestHelpEveryCommand(t *testing.T) {
	cmds := commands()
	for name, c := range cmds {
		t.Run(name, func(t *testing.T) {
			if _, ok := manuals()[name]; !ok {
				t.Fatalf("no manual entry for %q in help.go", name)
			}
			var stdout, stderr bytes.Buffer
			if code := run([]string{"help", name}, strings.NewReader(""), &stdout, &stderr); code != 0 {
				t.Fatalf("shareless help %s: exit %d, stderr %q", name, code, stderr.String())
			}
			s := sections(t, stdout.String())
			for _, title := range sectionTitles {
				if strings.TrimSpace(s[title]) == "" {
					t.Errorf("%s: empty", title)
				}
			}
			if want := "shareless " + name + " - " + c.summary + "\n"; s["NAME"] != want {
				t.Errorf("NAME %q, want %q", s["NAME"], want)
			}
			if !strings.HasPrefix(s["SYNOPSIS"], "shareless "+name) {
				t.Errorf("SYNOPSIS %q", s["SYNOPSIS"])
			}
			usage := usageText(name, c, manuals()[name])
			if !strings.HasPrefix(usage, "usage: shareless "+name) {
				t.Fatalf("'shareless %s -h' prints %q", name, usage)
			}
			documented := map[string]bool{}
			for _, l := range strings.Split(s["OPTIONS"], "\n") {
				if m := flagRE.FindStringSubmatch(l); m != nil && strings.HasPrefix(l, "-") {
					documented[strings.TrimLeft(m[1], "-")] = true
				}
			}
			for _, m := range flagRE.FindAllStringSubmatch(s["SYNOPSIS"], -1) {
				if f := strings.TrimLeft(m[1], "-"); !documented[f] {
					t.Errorf("flag %s of the synopsis is not under OPTIONS (documented: %v)", m[1], documented)
				}
			}
			// Every line of the -h text is on the page (but the heading
			// of the flag defaults).
			for _, l := range strings.Split(usage, "\n") {
				for _, part := range strings.Split(strings.TrimPrefix(l, "usage: "), "\t") {
					if part = strings.TrimSpace(part); part != "" && part != "flags:" && !strings.Contains(stdout.String(), part) {
						t.Errorf("the page lacks the usage text's %q", part)
					}
				}
			}
		})
	}
}

func TestHelpUnknownCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"help", "nosuch"}, strings.NewReader(""), &stdout, &stderr); code != 2 || stdout.Len() != 0 {
		t.Errorf("exit %d, stdout %q", code, stdout.String())
	}
	if !strings.Contains(stderr.String(), `unknown command "nosuch"`) {
		t.Errorf("stderr %q", stderr.String())
	}
}

func TestHelpListsEveryCommand(t *testing.T) {
	var stdout bytes.Buffer
	if code := run([]string{"help"}, strings.NewReader(""), &stdout, &stdout); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for name := range commands() {
		if !strings.Contains(stdout.String(), "\n  "+name+" ") {
			t.Errorf("%s not listed:\n%s", name, stdout.String())
		}
	}
}
