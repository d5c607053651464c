// Command shareless is the agent, its libvirt hook, the operator CLI and the
// standalone tools, as subcommands of one binary.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// env is what a subcommand gets instead of package globals.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	log            *slog.Logger
}

type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands lists the subcommands; each lives in its own file.
func commands() map[string]command {
	return map[string]command{
		"help":          {"describe the subcommands", nil},
		"agent":         {"run this host's agent (the daemon)", runAgent},
		"status":        {"migrations, replicas and whether this host is safe to power off", runStatus},
		"hook":          {"libvirt qemu hook: asks the local agent, never libvirt", runHook},
		"adopt":         {"move a running instance's file disks onto managed disks", runAdopt},
		"release":       {"give an adopted instance's disks back to its files", runRelease},
		"copy-now":      {"switch an instance's remote-only disks (Method B) to copying", runCopyNow},
		"export":        exportCommand(),
		"cinder-driver": {"the Cinder driver wrapper's decisions (Method A), JSON on stdin and stdout", runCinderDriver},
		"copy":          {copySummary, runCopy},
		"demo":          {"Method C on one machine: a disk to a second store over iSCSI and back", runDemo},
		"bench":         {"measure a suite (replica) against its peer tools", runBench},
	}
}

// usageError is a bad invocation or bad input: one line, exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	cmds := commands()
	if len(args) > 1 && args[0] == "help" {
		if len(args) > 2 || !printManual(stdout, args[1], cmds) {
			fmt.Fprintf(stderr, "shareless help: unknown command %q (see 'shareless help')\n", strings.Join(args[1:], " "))
			return 2
		}
		return 0
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printHelp(stdout, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok || c.run == nil {
		fmt.Fprintf(stderr, "shareless: unknown command %q (see 'shareless help')\n", args[0])
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := c.run(ctx, e, args[1:])
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "shareless %s: %v\n", args[0], err)
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

func printHelp(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: shareless COMMAND [ARGS]\n\ncommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\n'shareless help COMMAND' prints a command's manual, 'shareless COMMAND -h' its usage.")
}
