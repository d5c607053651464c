package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// ControllerAddr is the lab's address for services that every host
// reaches, as a cloud's controller (the message broker): the bridge's own
// address in the switch namespace, outside any host, so that cutting a
// host's link (Cut) cuts it from these services too.
func (l *Lab) ControllerAddr() netip.Addr {
	return netip.MustParseAddr("10.254.71.254")
}

// SwitchNetNS is the network namespace of the lab's bridge, br0: another
// namespace joins the lab with a veth pair into it (a control plane such
// as tox-tests/osbox, OSBOX_BRIDGE_NETNS), on an address of Subnet that no
// host uses.
func (l *Lab) SwitchNetNS() string { return l.switchNS }

// Expose makes a service of the test process, listening on to in the
// machine's own network namespace (e.g. a broker on 127.0.0.1), reachable
// from every host at ControllerAddr and the same port, until cleanup. The
// service itself stays where it is: the lab forwards each connection.
func (l *Lab) Expose(t testing.TB, to string) netip.AddrPort {
	t.Helper()
	_, port, err := net.SplitHostPort(to)
	if err != nil {
		t.Fatalf("lab: expose %s: %v", to, err)
	}
	ln, err := listenIn(l.switchNS, net.JoinHostPort(l.ControllerAddr().String(), port))
	if err != nil {
		t.Fatalf("lab: expose %s: %v", to, err)
	}
	f := &forwarder{ln: ln, to: to, conns: map[net.Conn]bool{}}
	go f.serve()
	l.teardown = append(l.teardown, func() { logErr(t, f.close()) })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// listenIn listens on addr inside the network namespace netns.
func listenIn(netns, addr string) (ln net.Listener, err error) {
	err = inNetNS(netns, func() error {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// Dial connects to addr from inside the host's network namespace: how a
// test reaches a service that listens only there, such as an agent's
// metrics on the host's own loopback.
func (h *Host) Dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = inNetNS(h.NetNS, func() error {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// inNetNS runs f on a thread in the network namespace netns. A socket
// keeps the namespace it was created in for life, so only its creation
// needs that thread: a locked thread that the runtime ends afterwards,
// because it is never unlocked, so no other goroutine ever runs in the
// lab's namespace.
func inNetNS(netns string, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := os.Open(filepath.Join("/var/run/netns", netns))
		if err != nil {
			ch <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("setns %s: %w", netns, err)
			return
		}
		ch <- f()
	}()
	return <-ch
}

// forwarder copies each connection accepted on ln to a new connection to
// to, both ways, until either side closes.
type forwarder struct {
	ln net.Listener
	to string

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

func (f *forwarder) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return // closed
		}
		up, err := net.Dial("tcp", f.to)
		if err != nil {
			c.Close()
			continue
		}
		if !f.track(c, up) {
			return
		}
		f.wg.Add(2)
		go f.pipe(c, up)
		go f.pipe(up, c)
	}
}

// track registers a pair of connections, or closes them if the forwarder
// is closing.
func (f *forwarder) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		f.conns[c] = true
	}
	return true
}

// pipe copies from src to dst; the end of either closes both, as a cut
// cable would end both sides of a proxied connection.
func (f *forwarder) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	io.Copy(dst, src) // the end of a stream, however it ended, ends the pair
	f.mu.Lock()
	delete(f.conns, dst)
	delete(f.conns, src)
	f.mu.Unlock()
	dst.Close()
	src.Close()
}

func (f *forwarder) close() error {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	err := f.ln.Close()
	f.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Cut unplugs h from the lab's switch, as a pulled cable: its packets are
// dropped, without an error to either side, until Restore. Connections
// stay open and stall; a host that notices the silence does so by its
// own timeouts.
func (l *Lab) Cut(h *Host) error {
	return l.ipIn(l.switchNS, "link", "set", "dev", "port-"+h.Name, "down")
}

// Restore plugs h back in after Cut.
func (l *Lab) Restore(h *Host) error {
	return l.ipIn(l.switchNS, "link", "set", "dev", "port-"+h.Name, "up")
}
