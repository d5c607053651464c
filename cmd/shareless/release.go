package main

import (
	"context"

	"github.com/shareless/shareless/localapi"
)

const releaseHelp = `usage: shareless release [--json] [--socket PATH] SERVER

Gives an adopted instance's disks back to Nova's files: the local agent has
libvirt block-copy each managed disk onto the file it came from and pivot,
then removes the disk from its store and the adoption guard. SERVER must be
running on this host, not migrating, with every managed disk complete and
writable. SERVER is named as for 'shareless adopt'.
`

func runRelease(ctx context.Context, e *env, args []string) error {
	return runAdoption(ctx, e, args, "release", releaseHelp, (*localapi.Client).Release)
}
