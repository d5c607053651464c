package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	osconfig "github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"

	"github.com/shareless/shareless/config"
)

// novaHosts is the agent's Nova client. It finds a peer that [peers] does
// not list: the host_ip of the hypervisor whose nova-compute service runs
// on that host (the address Nova itself uses for live migration); and the
// instance a server name names, for `shareless adopt`. It authenticates on
// first use, so that a Keystone outage does not keep the agent from
// starting.
type novaHosts struct {
	cfg config.OpenStack
	now func() time.Time

	mu      sync.Mutex
	compute *gophercloud.ServiceClient
	cache   map[string]novaAddr
}

type novaAddr struct {
	ip string
	at time.Time
}

// novaCacheTTL is how long a host's address is remembered: a host's
// storage address changes with a redeployment, not during a migration.
const novaCacheTTL = 10 * time.Minute

// newNovaHosts returns nil when [openstack] configures no credentials.
func newNovaHosts(cfg config.OpenStack, now func() time.Time) *novaHosts {
	if cfg.Cloud == "" && cfg.AuthURL == "" {
		return nil
	}
	return &novaHosts{cfg: cfg, now: now, cache: make(map[string]novaAddr)}
}

// hostIP returns the host_ip of host's hypervisor.
func (n *novaHosts) hostIP(ctx context.Context, host string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.cache[host]; ok && n.now().Sub(c.at) < novaCacheTTL {
		return c.ip, nil
	}
	sc, err := n.client(ctx)
	if err != nil {
		return "", fmt.Errorf("Nova: %w", err)
	}
	// A plain GET, decoding only host_ip and service.host: gophercloud's
	// hypervisors package insists on fields that Nova drops from
	// microversion 2.88 on. The default microversion (2.1) does not page it.
	var body struct {
		Hypervisors []struct {
			HostIP  string `json:"host_ip"`
			Service struct {
				Host string `json:"host"`
			} `json:"service"`
		} `json:"hypervisors"`
	}
	if _, err := sc.Get(ctx, sc.ServiceURL("os-hypervisors", "detail"), &body, nil); err != nil {
		return "", fmt.Errorf("Nova: listing hypervisors: %w", err)
	}
	var ip string
	for _, h := range body.Hypervisors {
		if h.Service.Host == host && h.HostIP != "" {
			ip = h.HostIP
			break
		}
	}
	if ip != "" {
		n.cache[host] = novaAddr{ip, n.now()}
		return ip, nil
	}
	return "", fmt.Errorf("Nova knows no hypervisor with a host_ip on host %q", host)
}

// serverID returns the UUID of the one Nova server named name, in any
// project (Nova's name filter is a regular expression: anchored here).
func (n *novaHosts) serverID(ctx context.Context, name string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	sc, err := n.client(ctx)
	if err != nil {
		return "", fmt.Errorf("Nova: %w", err)
	}
	q := url.Values{"all_tenants": {"1"}, "name": {"^" + regexp.QuoteMeta(name) + "$"}}
	var body struct {
		Servers []struct {
			ID string `json:"id"`
		} `json:"servers"`
	}
	if _, err := sc.Get(ctx, sc.ServiceURL("servers")+"?"+q.Encode(), &body, nil); err != nil {
		return "", fmt.Errorf("Nova: looking up server %q: %w", name, err)
	}
	switch len(body.Servers) {
	case 1:
		return strings.ToLower(body.Servers[0].ID), nil
	case 0:
		return "", fmt.Errorf("Nova knows no server named %q", name)
	default:
		return "", fmt.Errorf("Nova has %d servers named %q: name one by its UUID", len(body.Servers), name)
	}
}

// client authenticates once; n.mu is held.
func (n *novaHosts) client(ctx context.Context) (*gophercloud.ServiceClient, error) {
	if n.compute != nil {
		return n.compute, nil
	}
	var (
		ao     gophercloud.AuthOptions
		eo     gophercloud.EndpointOpts
		tlsCfg *tls.Config
		err    error
	)
	if n.cfg.Cloud != "" {
		if ao, eo, tlsCfg, err = clouds.Parse(clouds.WithCloudName(n.cfg.Cloud)); err != nil {
			return nil, fmt.Errorf("clouds.yaml cloud %q: %w", n.cfg.Cloud, err)
		}
	} else {
		ao = gophercloud.AuthOptions{
			IdentityEndpoint: n.cfg.AuthURL, Username: n.cfg.Username, Password: n.cfg.PasswordFile.Secret.Reveal(),
			DomainName: n.cfg.UserDomainName, AllowReauth: true,
			Scope: &gophercloud.AuthScope{ProjectName: n.cfg.ProjectName, DomainName: n.cfg.ProjectDomainName},
		}
		eo = gophercloud.EndpointOpts{Region: n.cfg.RegionName, Availability: gophercloud.Availability(n.cfg.Interface)}
	}
	pc, err := osconfig.NewProviderClient(ctx, ao, osconfig.WithTLSConfig(tlsCfg))
	if err != nil {
		return nil, fmt.Errorf("authenticating to %s: %w", ao.IdentityEndpoint, err)
	}
	if n.compute, err = openstack.NewComputeV2(pc, eo); err != nil {
		return nil, fmt.Errorf("compute endpoint: %w", err)
	}
	return n.compute, nil
}
