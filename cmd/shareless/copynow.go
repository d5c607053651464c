package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"

	"github.com/shareless/shareless/localapi"
)

const copyNowHelp = `usage: shareless copy-now [--json] [--socket PATH] INSTANCE

Switches an instance's remote-only replicas on this host (Method B, the
agent's [replicator] method = remote) to copying (Method C): from now on
reads keep what they fetch and, once the source is sealed, the background
copy brings the rest of each disk here; 'shareless status' shows its
progress. Disks that already copy are left as they are. INSTANCE is the
instance UUID, as 'shareless status' lists it.
`

func runCopyNow(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("copy-now", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, copyNowHelp) }
	socket := fs.String("socket", defaultSocket, "agent socket")
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usagef("want one INSTANCE (see 'shareless copy-now -h')")
	}
	res, err := localapi.NewClient(*socket).CopyNow(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	switch {
	case len(res.Switched) == 0:
		fmt.Fprintf(e.stdout, "instance %s: no remote-only disk; already copying: %s\n", res.Instance, strings.Join(res.Copying, ", "))
	default:
		fmt.Fprintf(e.stdout, "instance %s: copying now: %s\n", res.Instance, strings.Join(res.Switched, ", "))
	}
	return nil
}
