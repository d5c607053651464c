package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/shareless/shareless/localapi"
)

const statusHelp = `usage: shareless status [--json] [--socket PATH]

Shows this host's migrations and managed disks, with copy progress, and
whether the host is safe to power off: no other host still copies from it.
--json prints the agent's status document for scripts.
`

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, statusHelp) }
	socket := fs.String("socket", defaultSocket, "agent socket")
	asJSON := fs.Bool("json", false, "print the status document as JSON")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usagef("unexpected arguments: %v", fs.Args())
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := localapi.NewClient(*socket).Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := fmt.Fprintf(e.stdout, "%s\n", raw)
		return err
	}
	var st localapi.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("decoding agent status: %w", err)
	}
	printStatus(e.stdout, &st)
	return nil
}

func printStatus(w io.Writer, st *localapi.Status) {
	fmt.Fprintf(w, "host %s\n", st.Host)
	if st.SafeToPowerOff {
		fmt.Fprintln(w, "safe to power off: yes")
	} else {
		eta, n := time.Duration(0), 0
		for _, o := range st.CopyingFromHere {
			eta = max(eta, seconds(o.ETASeconds))
			n += max(o.Replicas, 1) // unknown progress counts as one
		}
		fmt.Fprintf(w, "safe to power off: no (%d replicas still copying from this host, ETA %s)\n", n, etaString(eta))
		for _, o := range st.CopyingFromHere {
			if !o.Known {
				fmt.Fprintf(w, "  %s -> %s  %s  progress unknown: %s\n", o.Instance, o.Dest, o.Phase, o.Error)
				continue
			}
			fmt.Fprintf(w, "  %s -> %s  %s  %s\n", o.Instance, o.Dest, o.Phase,
				progressLine(o.Size-o.BytesRemaining, o.Size, o.Rate, seconds(o.ETASeconds)))
		}
	}
	fmt.Fprintf(w, "\nmigrations: %d\n", len(st.Migrations))
	for _, m := range st.Migrations {
		dest := m.Dest
		if dest == "" {
			dest = "?"
		}
		fmt.Fprintf(w, "  %s  %s  %s>%s  %s", m.Instance, m.Role, m.Source, dest, m.Phase)
		if m.Total > 0 {
			fmt.Fprintf(w, "  %s", progressLine(m.Done, m.Total, 0, 0))
		}
		if m.Error != "" {
			fmt.Fprintf(w, "  error: %s", m.Error)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\ndisks: %d\n", len(st.Disks))
	for _, d := range st.Disks {
		sealed := ""
		if d.Sealed {
			sealed = " sealed"
		}
		copied := ""
		if d.BytesCopied > 0 {
			copied = "  copied " + human(d.BytesCopied)
		}
		mode := ""
		if d.Mode == "remote" {
			mode = " (remote-only: shareless copy-now)"
		}
		fmt.Fprintf(w, "  %s/%s  %s%s%s  %s%s\n", d.Instance, d.Disk, d.State, sealed, mode,
			progressLine(d.BytesLocal, d.Size, d.Rate, seconds(d.ETASeconds)), copied)
		if d.SourceDownSince != nil {
			fmt.Fprintf(w, "    ALERT: source unreachable since %s\n", d.SourceDownSince.UTC().Format(time.RFC3339))
		}
	}
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// progressLine renders done of total as a bar with bytes, rate and ETA.
func progressLine(done, total int64, rate float64, eta time.Duration) string {
	const width = 20
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	n := int(frac * width)
	s := fmt.Sprintf("[%s%s] %5.1f%% %s / %s", strings.Repeat("#", n), strings.Repeat(".", width-n), 100*frac, human(done), human(total))
	if rate > 0 {
		s += fmt.Sprintf("  %s/s", human(int64(rate)))
	}
	if done < total {
		s += "  ETA " + etaString(eta)
	}
	return s
}

func etaString(d time.Duration) string {
	if d <= 0 {
		return "unknown"
	}
	return d.Round(time.Second).String()
}
