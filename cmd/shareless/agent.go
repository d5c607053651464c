package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/shareless/shareless/agent"
	"github.com/shareless/shareless/config"
)

const agentHelp = `usage: shareless agent [--config-file PATH]

Runs this host's agent until SIGINT or SIGTERM: it serves the managed disks
over iSCSI, follows Nova's live migrations from RabbitMQ, answers peers on the
control API and the libvirt hook and CLI on the local socket. A bad
configuration is one line on stderr and exit status 2.
`

func runAgent(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, agentHelp) }
	path := fs.String("config-file", "/etc/shareless/shareless.conf", "agent configuration (etc/shareless.conf.sample)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usagef("unexpected arguments: %v", fs.Args())
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return usageError{err}
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: cfg.Default.LogLevel}))
	a, err := agent.New(cfg, agent.Options{Log: log})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
