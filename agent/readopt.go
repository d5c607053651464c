package agent

import (
	"context"
	"path/filepath"
	"strings"
	"sync"

	"github.com/shareless/shareless/localapi"
	"github.com/shareless/shareless/virt"
)

// readopter remembers the domains whose disks were handed back to Nova
// for a start ([libvirt] readopt): once such a domain runs, the agent
// adopts it again. It is memory only: after an agent restart a domain
// handed back before stays on its files until `shareless adopt`.
type readopter struct {
	mu      sync.Mutex
	domains map[string]bool
}

// handedBack records domain for adoption once it runs.
func (r *readopter) handedBack(domain string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.domains == nil {
		r.domains = make(map[string]bool)
	}
	r.domains[domain] = true
}

// pending says whether domain is recorded.
func (r *readopter) pending(domain string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.domains[domain]
}

// take forgets domain and says whether it was recorded.
func (r *readopter) take(domain string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok := r.domains[domain]
	delete(r.domains, domain)
	return ok
}

// readopt adopts domain d again if its disks were handed back for this
// start and it runs now (Nova starts a domain paused and resumes it, so
// the started and resumed events both come here). A rescue domain, which
// boots from Nova's disk.rescue, is not adopted: the unrescue's start is.
func (a *Agent) readopt(ctx context.Context, c *virt.Conn, d virt.Domain) {
	// Most starts are not Nova's after a hand-back: ask libvirt nothing.
	if !a.readopts.pending(d.Name) {
		return
	}
	if st, err := c.DomainState(ctx, d); err != nil || st != virt.StateRunning {
		return
	}
	disks, err := c.Disks(ctx, d)
	if err != nil {
		return
	}
	for _, dk := range disks {
		if strings.HasSuffix(filepath.Base(dk.File), ".rescue") {
			return
		}
	}
	if !a.readopts.take(d.Name) {
		return
	}
	// Adoption waits for its block copies; events keep coming meanwhile.
	go func() {
		ad, err := a.adopt(ctx, d.Name, func(localapi.Progress) {})
		if err != nil {
			a.log.Warn("adopting again after Nova's start failed: the instance runs on its files; `shareless adopt` it", "domain", d.Name, "err", err)
			return
		}
		a.log.Info("adopted again after Nova's start", "domain", d.Name, "instance", ad.Instance, "disks", len(ad.Disks))
	}()
}
