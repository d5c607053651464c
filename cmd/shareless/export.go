package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/shareless/shareless/internal/secret"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/scsi"
	"github.com/shareless/shareless/iscsi/target"
)

func exportCommand() command {
	return command{"serve files as iSCSI LUNs (LUN 0, 1, ...) until SIGINT/SIGTERM", runExport}
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runExport(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: shareless export --listen ADDR:PORT --iqn IQN [--chap-user NAME --chap-secret-file PATH]\n"+
			"       [--mutual-user NAME --mutual-secret-file PATH] [--allow-initiator IQN]... [--no-auth] FILE [FILE...]")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "", "address to serve on, host:port (required)")
	iqn := fs.String("iqn", "", "target name (required)")
	chapUser := fs.String("chap-user", "", "CHAP user name the initiator must present")
	chapFile := fs.String("chap-secret-file", "", "file holding the initiator's CHAP secret")
	mutualUser := fs.String("mutual-user", "", "CHAP user name the target answers mutual CHAP with")
	mutualFile := fs.String("mutual-secret-file", "", "file holding the target's mutual CHAP secret")
	noAuth := fs.Bool("no-auth", false, "serve without authentication (explicit opt-out)")
	var allow stringList
	fs.Var(&allow, "allow-initiator", "initiator IQN allowed to log in (repeatable; default: any that authenticates)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // usage already printed
		}
		return usagef("%v", err)
	}
	if *listen == "" || *iqn == "" {
		return usagef("--listen and --iqn are required")
	}
	if _, err := net.ResolveTCPAddr("tcp", *listen); err != nil {
		return usagef("--listen %q: %v", *listen, err)
	}
	files := fs.Args()
	if len(files) == 0 {
		return usagef("no FILE to export")
	}
	cfg := target.Config{IQN: *iqn, Listen: []string{*listen}, NoAuth: *noAuth,
		AllowInitiators: allow, Logger: e.log}
	var err error
	if cfg.CHAP, err = credentials("chap", *chapUser, *chapFile); err != nil {
		return err
	}
	if cfg.MutualCHAP, err = credentials("mutual", *mutualUser, *mutualFile); err != nil {
		return err
	}
	if cfg.CHAP == nil && !*noAuth {
		return usagef("authentication is required: give --chap-user and --chap-secret-file, or --no-auth")
	}
	for i, f := range files {
		d, err := blockdev.OpenFile(f, false)
		if err != nil {
			return usagef("%v", err)
		}
		defer d.Close()
		abs, _ := filepath.Abs(f)
		cfg.LUNs = append(cfg.LUNs, target.LUN{Device: d, Unit: scsi.UnitConfig{
			ID: fmt.Sprintf("%s/%d:%s", *iqn, i, abs), MaxTransfer: 32 << 20,
			PersistentReservations: true, Logger: e.log}})
	}
	t, err := target.New(cfg)
	if err != nil {
		return usagef("%v", err)
	}
	e.log.Info("exporting", "iqn", *iqn, "listen", t.Addrs()[0].String(), "luns", len(files), "auth", !*noAuth)
	return t.Serve(ctx)
}

// credentials reads a CHAP user and its secret file; both or neither.
func credentials(which, user, file string) (*chap.Credentials, error) {
	if user == "" && file == "" {
		return nil, nil
	}
	if user == "" || file == "" {
		return nil, usagef("--%s-user and the %s secret file go together", which, which)
	}
	s, err := readSecret(which, file)
	if err != nil {
		return nil, err
	}
	return &chap.Credentials{User: user, Secret: s}, nil
}

// readSecret reads a CHAP secret from a file (a trailing newline is not
// part of it), so that secrets stay out of process listings and shell
// history.
func readSecret(which, file string) (secret.Secret, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return secret.Secret{}, usagef("%s secret: %v", which, err)
	}
	s, err := chap.NewSecret(bytes.TrimRight(b, "\r\n"))
	if err != nil {
		return secret.Secret{}, usagef("%s secret in %s: %v", which, file, err)
	}
	return s, nil
}
