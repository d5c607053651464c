package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/shareless/shareless/cinderbridge"
)

// defaultTransportMap is where the transport map lives on Cinder volume
// nodes and compute hosts alike.
const defaultTransportMap = "/etc/shareless/transport.json"

const cinderDriverHelp = `usage: shareless cinder-driver [--transport-map PATH]

The Go half of the Cinder volume driver wrapper (shareless_cinder, in
cinderdriver/ of the source; make install puts it in Python's local site):
the wrapper runs it once per decision, with one JSON request on stdin, and
reads one JSON answer on stdout. Operations: route (which connector the
wrapped FC driver's initialize_connection gets), present (the
connection_info to answer), release (which connector its
terminate_connection gets, if any) and retype (whether a retype needs the
array at all).
`

func runCinderDriver(_ context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("cinder-driver", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, cinderDriverHelp) }
	path := fs.String("transport-map", defaultTransportMap, "the transport map (JSON)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usagef("no arguments: the request comes on stdin")
	}
	var req cinderbridge.DriverRequest
	if err := json.NewDecoder(io.LimitReader(e.stdin, 1<<20)).Decode(&req); err != nil {
		return usagef("request: %v", err)
	}
	m, err := cinderbridge.LoadTransportMap(*path)
	if err != nil {
		return err
	}
	ans, err := m.Decide(req)
	if err != nil {
		return fmt.Errorf("%s of volume %s: %w", req.Op, req.Volume.ID, err)
	}
	return json.NewEncoder(e.stdout).Encode(ans)
}
