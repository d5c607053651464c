package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/shareless/shareless/localapi"
)

const adoptHelp = `usage: shareless adopt [--json] [--socket PATH] SERVER
       shareless adopt [--json] [--socket PATH] --file PATH [--file PATH ...] INSTANCE

Turns the running instance SERVER's local file disks (raw or qcow2) into
managed disks, without the guest noticing: the local agent creates each disk
in its store, exports it, and has libvirt block-copy the file onto it and
pivot. SERVER is a libvirt domain name, an instance UUID, or a Nova server
name (resolved through Nova when the agent has [openstack] credentials).

Nova's files are left as they were at the pivot and are never used again
while the instance is adopted: the libvirt hook refuses to start the domain
on them. 'shareless release SERVER' gives the disks back to the files.
--json prints the adoption record for scripts; progress goes to stderr.

With --file, the agent adopts the given raw disk files of INSTANCE (a
UUID) that has no libvirt domain on this host, by copying them into its
store: on a host without libvirtd ([libvirt] uri empty: a Nova virt driver
other than libvirt, such as the fake driver of a test cloud), or for an
instance whose domain is not here. Nothing may write the files meanwhile.
Each managed disk is named after its file (disk, disk.local, ...) and then
migrates like any other; there is no release of a file adoption.
`

func runAdopt(ctx context.Context, e *env, args []string) error {
	return runAdoption(ctx, e, args, "adopt", adoptHelp, (*localapi.Client).Adopt)
}

// files is the repeatable --file flag of adopt.
type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

// runAdoption is the client side of adopt and release: call asks the
// agent, which does the work; this prints its progress and its answer.
// adopt also takes --file, which asks for a file adoption instead.
func runAdoption(ctx context.Context, e *env, args []string, name, help string,
	call func(*localapi.Client, context.Context, string, func(localapi.Progress)) (localapi.Adoption, error)) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, help) }
	socket := fs.String("socket", defaultSocket, "agent socket")
	asJSON := fs.Bool("json", false, "print the adoption record as JSON")
	var adoptFiles files
	if name == "adopt" {
		fs.Var(&adoptFiles, "file", "adopt this raw disk file (absolute path; repeatable) of INSTANCE, which has no libvirt domain here")
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usagef("want one SERVER (see 'shareless %s -h')", name)
	}
	if len(adoptFiles) > 0 {
		for i, f := range adoptFiles {
			abs, err := filepath.Abs(f)
			if err != nil {
				return usageError{err}
			}
			adoptFiles[i] = abs
		}
		call = func(c *localapi.Client, ctx context.Context, instance string, p func(localapi.Progress)) (localapi.Adoption, error) {
			return c.AdoptFiles(ctx, instance, adoptFiles, p)
		}
	}
	// No deadline of our own: a copy takes as long as the disk needs, and
	// an interrupt (ctx) makes the agent cancel it, leaving the guest on
	// its current disk.
	// One progress line per disk and 5% step.
	var lastTarget string
	var lastStep uint64
	ad, err := call(localapi.NewClient(*socket), ctx, fs.Arg(0), func(p localapi.Progress) {
		if p.Total == 0 {
			return
		}
		if step := p.Done * 20 / p.Total; p.Target != lastTarget || step > lastStep {
			fmt.Fprintf(e.stderr, "%s: %s\n", p.Target, progressLine(int64(p.Done), int64(p.Total), 0, 0))
			lastTarget, lastStep = p.Target, step
		}
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(ad)
	}
	printAdoption(e.stdout, name, ad)
	return nil
}

func printAdoption(w io.Writer, verb string, ad localapi.Adoption) {
	if ad.Domain == "" { // a file adoption
		fmt.Fprintf(w, "%s instance %s: done\n", verb, ad.Instance)
	} else {
		fmt.Fprintf(w, "%s %s (instance %s): done\n", verb, ad.Domain, ad.Instance)
	}
	for _, d := range ad.Disks {
		fmt.Fprintf(w, "  %s  %s (%s)  <->  %s  %s\n", d.Target, d.File, d.Format, d.IQN, human(d.Size))
	}
}
