package devstack_test

import (
	"bufio"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shareless/shareless/internal/testenv"
)

// shellScripts returns the repository's shell scripts: *.sh files, files
// with a sh or bash #! line, and files that name their shell to
// shellcheck (the devstack plugin's files, which devstack sources).
func shellScripts(t *testing.T) []string {
	t.Helper()
	root := repoRoot(t)
	var scripts []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".work", "bin", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if strings.HasSuffix(path, ".sh") || isShell(path) {
			scripts = append(scripts, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return scripts
}

func isShell(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 256), 256)
	if !sc.Scan() {
		return false
	}
	first := sc.Text()
	for _, p := range []string{"#!/bin/sh", "#!/bin/bash", "#!/usr/bin/env bash", "#!/usr/bin/env sh", "# shellcheck shell="} {
		if strings.HasPrefix(first, p) {
			return true
		}
	}
	return false
}

func TestShellScriptsParse(t *testing.T) {
	scripts := shellScripts(t)
	for _, want := range []string{"devstack/plugin.sh", "devstack/settings", "devstack/override-defaults", "devstack/testdata/contract.sh", "etc/libvirt-hook-qemu"} {
		found := false
		for _, s := range scripts {
			found = found || strings.HasSuffix(s, "/"+want)
		}
		if !found {
			t.Errorf("%s is not among the scripts checked", want)
		}
	}
	for _, s := range scripts {
		shell := "bash"
		if isSh(s) {
			shell = "sh"
		}
		if out, err := exec.Command(shell, "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", shell, s, err, out)
		}
	}
}

func isSh(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && (strings.HasPrefix(string(b), "#!/bin/sh\n") || strings.HasPrefix(string(b), "#!/usr/bin/env sh\n"))
}

func TestShellcheck(t *testing.T) {
	testenv.NeedCommands(t, "shellcheck")
	scripts := shellScripts(t)
	// -x follows sourced files; the contract is what devstack defines.
	cmd := exec.Command("shellcheck", append([]string{"-x", "--severity=style"}, scripts...)...)
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}
