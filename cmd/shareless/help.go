package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// manual is what a command's manual page says beyond its usage text. The
// synopsis, the description and (where the command prints them) the
// options come from the usage text the command prints for -h, so that
// there is one text per command: 'shareless CMD -h' and 'shareless help
// CMD' cannot drift apart.
type manual struct {
	// usage stands in for the -h text of a command that has no run
	// function (help itself).
	usage string
	// description follows the usage text's own, for a command whose -h
	// text is only a synopsis and its flags.
	description string
	// options documents the flags of a command whose -h text does not
	// list them (it prints no flag defaults).
	options string
	// exit is the EXIT STATUS section; empty means exitCommon.
	exit string
	// files is the FILES section.
	files string
}

const exitCommon = `0   success
1   failure; the reason is one line on stderr
2   bad invocation, bad input or bad configuration; one line on stderr`

const filesNone = `none of its own; only the files named on its command line`

// manuals holds one entry per command of commands() (help_test.go checks).
func manuals() map[string]manual {
	return map[string]manual{
		"help": {
			usage: `usage: shareless help [COMMAND]

Without COMMAND, lists the commands with a line each. With COMMAND, prints
its manual: NAME, SYNOPSIS, DESCRIPTION, OPTIONS, EXIT STATUS, FILES. The
synopsis, description and options are the text 'shareless COMMAND -h'
prints.
`,
			options: `none`,
			exit: `0   the list or the manual was printed
2   no COMMAND given to 'shareless' at all, or COMMAND is unknown`,
			files: `none`,
		},
		"agent": {
			options: `--config-file PATH
    the agent's configuration (default /etc/shareless/shareless.conf);
    every option is described in /etc/shareless/shareless.conf.sample`,
			exit: `0   stopped by SIGINT or SIGTERM, disks and journal closed
1   a component failed (the reason is logged); systemd restarts it
2   bad configuration: one line naming the file, section and option;
    restarting cannot help (the unit's RestartPreventExitStatus)`,
			files: `/etc/shareless/shareless.conf
    the configuration ([DEFAULT], [amqp], [iscsi], [store], [libvirt],
    [openstack], [peers], [api], [replicator])
/etc/shareless/shareless.conf.sample
    every option with its default and its meaning
/var/lib/shareless
    [DEFAULT] state_path: the migration journal, adoption guards and
    the lock that keeps a second agent off the same state
/var/lib/shareless/store
    [store] path: managed disk images (raw, sparse) and their replica
    metadata; never under Nova's instances directory
/run/shareless/agent.sock
    [api] socket: the local API of the hook and the CLI
/usr/local/lib/systemd/system/shareless-agent.service
    the systemd unit; logs go to the journal
    (journalctl -u shareless-agent)`,
		},
		"hook": {
			options: `--socket PATH
    the local agent's socket (default /run/shareless/agent.sock)
--timeout D
    the longest time the hook holds libvirtd (default 60s); keep
    [replicator] hook_wait below it
--state-dir DIR
    the agent's state directory (default /var/lib/shareless), where
    adoption guards are read when the agent does not answer`,
			exit: `0   libvirt goes on; for "migrate begin", with the XML printed on
    stdout, if any
1   libvirt aborts the operation; the reason on stderr is in libvirt's log
2   not called as 'hook qemu NAME OP SUBOP EXTRA'`,
			files: `/etc/libvirt/hooks/qemu.d/shareless
    the wrapper libvirtd runs: exec shareless hook qemu "$@"
    (restart libvirtd after installing it)
/run/shareless/agent.sock
    the agent it asks
/var/lib/shareless/guard/NAME
    adoption guard of domain NAME: the hook refuses to start NAME
    without the agent`,
		},
		"status": {
			options: `--json
    print the agent's status document (JSON) for scripts
--socket PATH
    the local agent's socket (default /run/shareless/agent.sock)`,
			exit: `0   the status was printed
1   the agent did not answer, or answered with an error (on stderr)
2   bad invocation`,
			files: `/run/shareless/agent.sock
    the agent it asks`,
		},
		"adopt": {
			options: `--file PATH
    adopt this raw disk file of INSTANCE, which has no libvirt domain on
    this host (repeatable); the agent copies it into its store
--json
    print the adoption record (JSON) for scripts; progress goes to stderr
--socket PATH
    the local agent's socket (default /run/shareless/agent.sock)`,
			exit: `0   adopted: every file disk is now a managed disk
1   not adopted; the guest stays on its files (the reason on stderr)
2   bad invocation`,
			files: `/run/shareless/agent.sock
    the agent that does the work
/var/lib/shareless/store
    where the managed disks are created
/var/lib/shareless/guard/NAME
    the adoption guard the hook reads`,
		},
		"copy-now": {
			options: `--json
    print the agent's answer (JSON) for scripts
--socket PATH
    the local agent's socket (default /run/shareless/agent.sock)`,
			exit: `0   every remote-only disk of the instance now copies (or none was left)
1   the agent did not answer, or has no disk of that instance (on stderr)
2   bad invocation`,
			files: `/run/shareless/agent.sock
    the agent that switches the disks`,
		},
		"release": {
			options: `--json
    print the adoption record (JSON) for scripts; progress goes to stderr
--socket PATH
    the local agent's socket (default /run/shareless/agent.sock)`,
			exit: `0   released: the guest runs on Nova's files again
1   not released; the guest stays on its managed disks (the reason on stderr)
2   bad invocation`,
			files: `/run/shareless/agent.sock
    the agent that does the work
/var/lib/shareless/guard/NAME
    the adoption guard, removed on success`,
		},
		"cinder-driver": {
			options: `--transport-map PATH
    the transport map (default /etc/shareless/transport.json)`,
			exit: `0   the answer is on stdout
1   the map does not cover the request, or cannot be read (on stderr)
2   bad invocation or a request that is not JSON`,
			files: `/etc/shareless/transport.json
    the transport map: each backend's FC ports, iSCSI targets, CHAP, LUN
    mapping and carrier
/usr/share/doc/shareless/cinder-driver.md
    what the wrapper, Cinder and Nova do, and the configuration`,
		},
		"export": {
			description: `Serves each FILE as a LUN of one iSCSI target (LUN 0, 1, ... in the order
given) on the given address only, until SIGINT or SIGTERM. CHAP is required
unless --no-auth says otherwise; the secret comes from a file, never from
the command line. --mutual-user and --mutual-secret-file make the target
prove itself to the initiator too; --allow-initiator limits the initiators
that may log in. For example:

    shareless export --listen 127.0.0.1:3260 --iqn iqn.2026-11.org.example:disk \
        --chap-user alice --chap-secret-file /etc/shareless/alice.secret disk.img
    qemu-img info iscsi://alice%SECRET@127.0.0.1:3260/iqn.2026-11.org.example:disk/0`,
			exit: `0   stopped by SIGINT or SIGTERM
1   the target failed while serving
2   bad flags, an unreadable FILE or secret file, or an address that
    cannot be served`,
			files: filesNone + ": the FILEs exported and the secret files",
		},
		"copy": {
			description: `SRC and DST are each a file or a libiscsi-style URL; the user may come
from --chap-user, the secret always comes from a file. The copy skips what
the source does not hold (SEEK_HOLE, GET LBA STATUS) and all-zero runs; a new
destination file stays sparse, an existing file or LUN gets holes punched or
WRITE SAME with UNMAP where the source is empty. It keeps --depth commands in
flight, survives a target restart or a dropped connection (the session is
reinstated and unanswered commands re-issued), and reports done only once
the destination is flushed.`,
			exit: `0   DST holds SRC's data and is flushed
1   the copy failed after it started
2   bad URL, wrong secret, unreachable host or size mismatch`,
			files: filesNone + ": SRC, DST and the secret files",
		},
		"demo": {
			exit: `0   every image checked equal at the end
1   a step or a check failed (the reason on stderr)
2   bad flags`,
			files: `DIR/ (--dir), or a temporary directory removed afterwards
    the two stores, the source image and the logs`,
		},
		"bench": {
			exit: exitCommon,
			files: `DIR/ (--dir), or a temporary directory removed afterwards
    the images the cases read and write`,
		},
	}
}

// usageText returns what 'shareless NAME -h' prints: each command prints
// its usage and returns before doing anything when given -h.
func usageText(name string, c command, m manual) string {
	if c.run == nil {
		return m.usage
	}
	var buf bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &buf,
		log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nothing may start
	_ = c.run(ctx, e, []string{"-h"})
	return buf.String()
}

// page is a manual page in sections.
type page struct {
	name, synopsis, description, options, exit, files string
}

// manualPage builds the page of command name.
func manualPage(name string, c command, m manual) page {
	p := page{name: "shareless " + name + " - " + c.summary, exit: m.exit, files: m.files}
	if p.exit == "" {
		p.exit = exitCommon
	}
	var synopsis, desc, opts []string
	lines := strings.Split(strings.TrimRight(usageText(name, c, m), "\n"), "\n")
	i := 0
	for ; i < len(lines); i++ {
		l := lines[i]
		if s, ok := strings.CutPrefix(l, "usage: "); ok {
			synopsis = append(synopsis, s)
			continue
		}
		if len(synopsis) > 0 && len(desc) == 0 && strings.HasPrefix(l, "       ") {
			synopsis = append(synopsis, "    "+strings.TrimSpace(l)) // continuation
			continue
		}
		if isFlagDefault(l) {
			break
		}
		desc = append(desc, l)
	}
	// flag.PrintDefaults: "  -name type" then "    \tdescription" lines.
	for ; i < len(lines); i++ {
		l := lines[i]
		if isFlagDefault(l) {
			// A one-letter flag without a value has its text after a tab.
			flag, text, _ := strings.Cut(strings.TrimSpace(l), "\t")
			if name, _, _ := strings.Cut(flag, " "); len(name) > 2 {
				flag = "-" + flag // --name for words, -v for letters
			}
			opts = append(opts, flag)
			if text != "" {
				opts = append(opts, "    "+text)
			}
		} else if t := strings.TrimSpace(l); t != "" {
			opts = append(opts, "    "+t)
		}
	}
	// A heading the usage text puts before its flag defaults.
	for len(desc) > 0 {
		last := strings.TrimSpace(desc[len(desc)-1])
		if last != "" && last != "flags:" {
			break
		}
		desc = desc[:len(desc)-1]
	}
	for len(desc) > 0 && strings.TrimSpace(desc[0]) == "" {
		desc = desc[1:]
	}
	p.synopsis = strings.Join(synopsis, "\n")
	if m.description != "" {
		if len(desc) > 0 {
			desc = append(desc, "")
		}
		desc = append(desc, m.description)
	}
	p.description = strings.Join(desc, "\n")
	p.options = m.options
	if len(opts) > 0 {
		p.options = strings.Join(opts, "\n")
		if m.options != "" {
			p.options += "\n" + m.options
		}
	}
	return p
}

func isFlagDefault(l string) bool {
	return strings.HasPrefix(l, "  -") && len(l) > 3 && l[3] != ' '
}

// printManual prints the manual of command name, or returns false if
// there is no such command.
func printManual(w io.Writer, name string, cmds map[string]command) bool {
	c, ok := cmds[name]
	if !ok {
		return false
	}
	p := manualPage(name, c, manuals()[name])
	section := func(title, body string) {
		fmt.Fprintln(w, title)
		for _, l := range strings.Split(body, "\n") {
			if strings.TrimSpace(l) == "" {
				fmt.Fprintln(w)
				continue
			}
			fmt.Fprintln(w, "    "+l)
		}
		fmt.Fprintln(w)
	}
	section("NAME", p.name)
	section("SYNOPSIS", p.synopsis)
	section("DESCRIPTION", p.description)
	section("OPTIONS", p.options)
	section("EXIT STATUS", p.exit)
	section("FILES", p.files)
	return true
}
