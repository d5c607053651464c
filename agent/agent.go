package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/shareless/shareless/cinderbridge"
	"github.com/shareless/shareless/config"
	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/localapi"
	"github.com/shareless/shareless/novahook"
	"github.com/shareless/shareless/replicator"
	"github.com/shareless/shareless/replicator/vfs"
)

// Options are the agent's injected dependencies.
type Options struct {
	Log   *slog.Logger     // nil discards
	Clock replicator.Clock // nil is the system clock
}

// Agent is one host's agent. New binds every listener and opens the
// store and the journal, so that a bad address or directory is reported
// at start; Run serves until its context ends or something fails.
type Agent struct {
	cfg      config.Config
	log      *slog.Logger
	clock    replicator.Clock
	chap     *chap.Credentials
	sign     *signer
	store    *replicator.Store
	portal   *portal
	disks    *disks
	journal  *novahook.Journal
	node     *novahook.Node
	exec     *executor
	hooks    *hookWaiters
	metrics  *metrics
	peerHTTP *http.Client
	nova     *novaHosts // nil without [openstack] credentials
	libvirt  libvirtLink
	volumes  *cinderbridge.TransportMap // [cinder] transport_map; nil: Method A off
	adoptMu  sync.Mutex                 // one adoption or release at a time (adopt.go)
	readopts readopter                  // [libvirt] readopt (readopt.go)

	apiLn, metricsLn, localLn net.Listener
	unlock                    func() error // releases the state directory

	ctx    context.Context // the agent's life; actions run under it
	cancel context.CancelCauseFunc
}

// New prepares the agent of cfg (config.Load has validated it).
func New(cfg config.Config, opts Options) (_ *Agent, err error) {
	a := &Agent{cfg: cfg, log: opts.Log, clock: opts.Clock, metrics: &metrics{},
		hooks: &hookWaiters{waiting: make(map[uint64]chan novahook.HookReply)}, peerHTTP: &http.Client{}}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.clock == nil {
		a.clock = replicator.SystemClock{}
	}
	a.log = a.log.With("host", cfg.Default.Host)
	a.exec = &executor{a: a, queues: make(map[string][]novahook.Action)}
	a.nova = newNovaHosts(cfg.OpenStack, a.clock.Now)
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	psk := cfg.API.PSKFile.Secret.Reveal()
	if psk == "" && !loopback(cfg.API.Listen) {
		return nil, fmt.Errorf("[api] listen %s is not loopback: a psk_file is required", cfg.API.Listen)
	}
	if psk == "" {
		a.log.Warn("control API without a pre-shared key: loopback only, unauthenticated")
	}
	a.sign = newSigner(psk, a.clock.Now)
	if f := cfg.ISCSI.CHAPSecretFile; f.Path != "" {
		s, err := chap.NewSecret([]byte(f.Secret.Reveal()))
		if err != nil {
			return nil, fmt.Errorf("[iscsi] chap_secret_file %s: %w", f.Path, err)
		}
		a.chap = &chap.Credentials{User: cfg.ISCSI.CHAPUser, Secret: s}
	} else {
		a.log.Warn("iSCSI exports without CHAP: acceptable on a lab network only")
	}

	if cfg.Cinder.TransportMap != "" {
		if a.volumes, err = cinderbridge.LoadTransportMap(cfg.Cinder.TransportMap); err != nil {
			return nil, fmt.Errorf("[cinder] transport_map: %w", err)
		}
	}

	unlock, err := lockState(cfg.Default.StatePath)
	if err != nil {
		return nil, err
	}
	closers = append(closers, unlock)
	a.unlock = unlock
	a.store, err = replicator.NewStore(vfs.OS{}, cfg.Store.Path, replicator.StoreOptions{
		Grain: int64(cfg.Replicator.Grain), Chunk: int64(cfg.Replicator.Chunk),
		SourceTimeout: cfg.Replicator.SourceTimeout, Clock: a.clock, Log: a.log})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", cfg.Store.Path, err)
	}
	j, st, err := novahook.OpenJournal(novahook.OSFS{}, filepath.Join(cfg.Default.StatePath, "journal"), 0)
	if err != nil {
		return nil, fmt.Errorf("migration journal: %w", err)
	}
	a.journal = j
	closers = append(closers, j.Close)
	a.node = novahook.NewNode(novahook.DefaultMachineConfig(cfg.Default.Host), j, st, a.exec, a.clock.Now, a.log)

	if a.portal, err = newPortal(cfg.ISCSI.Listen, cfg.ISCSI.Port, a.log); err != nil {
		return nil, err
	}
	closers = append(closers, func() error { a.portal.close(); return nil })
	a.disks = &disks{store: a.store, portal: a.portal, chap: a.chap, log: a.log, open: make(map[DiskRef]*disk)}
	if a.apiLn, err = net.Listen("tcp", cfg.API.Listen); err != nil {
		return nil, fmt.Errorf("control API: %w", err)
	}
	closers = append(closers, a.apiLn.Close)
	if cfg.API.MetricsListen != "" {
		if a.metricsLn, err = net.Listen("tcp", cfg.API.MetricsListen); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		closers = append(closers, a.metricsLn.Close)
	}
	if a.localLn, err = listenUnix(cfg.API.Socket); err != nil {
		return nil, fmt.Errorf("local API: %w", err)
	}
	return a, nil
}

// lockState takes the state directory for this process: two agents on one
// journal and store would each believe its own memory.
func lockState(dir string) (unlock func() error, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "agent.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("state directory %s is in use by another agent: %w", dir, err)
	}
	return f.Close, nil
}

// listenUnix binds the local socket, replacing a stale one left by a
// crash (a live agent would still answer on it).
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("another agent answers on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// The hook runs as libvirtd's user (root), the CLI under sudo.
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// loopback reports whether host:port is a loopback address.
func loopback(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(h)
	return h == "localhost" || ip != nil && ip.IsLoopback()
}

// fail ends the agent with err (a node that could not persist, a server
// that stopped).
func (a *Agent) fail(err error) { a.cancel(err) }

// Run serves until ctx ends (it then returns nil) or a part of the agent
// fails (it returns why). Everything is closed when it returns.
func (a *Agent) Run(ctx context.Context) error {
	a.ctx, a.cancel = context.WithCancelCause(ctx)
	defer a.cancel(nil)
	var wg sync.WaitGroup
	spawn := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(a.ctx); err != nil && a.ctx.Err() == nil {
				a.fail(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
	err := a.disks.openStore(a.ctx)
	if err == nil {
		spawn("iSCSI portal", a.portal.serve)
		spawn("control API", func(ctx context.Context) error { return serveHTTP(ctx, a.apiLn, a.controlHandler()) })
		if a.metricsLn != nil {
			spawn("metrics", func(ctx context.Context) error { return serveHTTP(ctx, a.metricsLn, a.metricsHandler()) })
		}
		spawn("local API", func(ctx context.Context) error { return localapi.Serve(ctx, a.localLn, localBackend{a}) })
		spawn("libvirt", a.runLibvirt)
		err = a.node.Restart(a.ctx)
	}
	if err == nil {
		spawn("ticks", func(ctx context.Context) error { return a.node.RunTicks(ctx, time.Second) })
		spawn("AMQP consumer", func(ctx context.Context) error {
			return novahook.NewConsumer(novahook.ConsumerConfigFrom(&a.cfg), countingHandler{a}, a.log).Run(ctx)
		})
		a.log.Info("agent running", "iscsi", a.portal.addr().String(), "api", a.apiLn.Addr().String(),
			"socket", a.cfg.API.Socket, "authenticated", a.sign != nil)
		<-a.ctx.Done()
		err = context.Cause(a.ctx)
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			err = nil // asked to stop
		}
	} else {
		a.fail(err)
	}
	wg.Wait()
	a.exec.wait()
	err = errors.Join(err, a.disks.closeAll(), a.journal.Close())
	a.apiLn.Close()
	if a.metricsLn != nil {
		a.metricsLn.Close()
	}
	a.localLn.Close()
	a.unlock()
	a.log.Info("agent stopped", "err", err)
	return err
}

// serveHTTP serves h on ln until ctx ends.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
