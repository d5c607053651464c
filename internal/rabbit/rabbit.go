// Package rabbit runs a private RabbitMQ broker for tests: its own node
// name, data and log directories, AMQP, distribution and epmd ports, so that
// it never meets the system's broker or another test's. It is started once
// per test package (from TestMain) because a start takes seconds.
//
// Processes are stopped by their PID (process group), never by name.
package rabbit

import (
	"context"
	"errors"
	"fmt"
	"github.com/shareless/shareless/internal/testenv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Commands returns the executables a broker needs; tests pass them to
// testenv.NeedCommands to skip or fail cleanly when they are missing.
func Commands() []string { return []string{"epmd", "erl"} }

// serverScript is the broker's own start script. /usr/sbin/rabbitmq-server
// is a wrapper that switches to the rabbitmq user and the system's data.
const serverScript = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// ErrNotInstalled is returned when the broker's start script is missing.
var ErrNotInstalled = errors.New("rabbitmq-server is not installed (scripts/deps.sh installs it)")

// Server is a running private broker.
type Server struct {
	AMQPPort int
	dir      string
	env      []string
	epmd     *exec.Cmd
	broker   *exec.Cmd
	done     chan error // broker's exit status
}

// Start starts epmd and a broker with all their files under dir, and
// returns once the broker accepts AMQP connections.
func Start(ctx context.Context, dir string) (*Server, error) {
	if _, err := os.Stat(serverScript); err != nil {
		return nil, ErrNotInstalled
	}
	ports, err := testenv.FreePorts(3)
	if err != nil {
		return nil, err
	}
	s := &Server{AMQPPort: ports[0], dir: dir}
	distPort, epmdPort := ports[1], ports[2]
	files := map[string]string{
		"rabbitmq-env.conf": "", // do not read /etc/rabbitmq/rabbitmq-env.conf
		"rabbitmq.conf":     fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n", s.AMQPPort),
		"enabled_plugins":   "[].\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{"home", "mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	s.env = append(os.Environ(),
		"HOME="+filepath.Join(dir, "home"), // the Erlang cookie lives here
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(dir, "rabbitmq-env.conf"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "rabbit.pid"),
		fmt.Sprintf("RABBITMQ_NODENAME=shareless-test-%d@localhost", s.AMQPPort),
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_DIST_PORT="+strconv.Itoa(distPort),
		"ERL_EPMD_PORT="+strconv.Itoa(epmdPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		// Makes the script exec the VM instead of wrapping it in a shell
		// that traps signals, so the PID we hold is the broker's.
		"RUNNING_UNDER_SYSTEMD=true",
	)
	// Our own epmd, in the foreground, so that the VM does not daemonize one
	// that would outlive the test.
	s.epmd = exec.Command("epmd", "-port", strconv.Itoa(epmdPort), "-address", "127.0.0.1")
	s.epmd.Env = s.env
	s.epmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.epmd.Start(); err != nil {
		return nil, fmt.Errorf("start epmd: %w", err)
	}
	if err := waitPort(ctx, epmdPort, 10*time.Second, nil); err != nil {
		s.Close()
		return nil, fmt.Errorf("epmd: %w", err)
	}
	if err := s.startBroker(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) startBroker(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "log", "console.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(serverScript)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start rabbitmq-server: %w", err)
	}
	s.broker, s.done = cmd, make(chan error, 1)
	go func() { s.done <- cmd.Wait() }()
	if err := waitPort(ctx, s.AMQPPort, 60*time.Second, s.done); err != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		s.broker = nil
		return fmt.Errorf("rabbitmq-server (log in %s): %w", filepath.Join(s.dir, "log"), err)
	}
	return nil
}

// URL is the AMQP URL of the broker's default virtual host.
func (s *Server) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", s.AMQPPort) }

// TransportURL is the same broker as oslo.messaging names it.
func (s *Server) TransportURL() string {
	return fmt.Sprintf("rabbit://guest:guest@127.0.0.1:%d/", s.AMQPPort)
}

// Restart stops the broker gracefully and starts it again on the same
// port and data: durable queues and their persistent messages survive,
// connections do not.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.stopBroker(); err != nil {
		return err
	}
	return s.startBroker(ctx)
}

// stopBroker sends SIGTERM to the broker's process group (a graceful
// shutdown) and waits; after 30 s it kills the group.
func (s *Server) stopBroker() error {
	if s.broker == nil {
		return nil
	}
	pgid := s.broker.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.done
	}
	s.broker = nil
	// The port must be free again before a restart can bind it.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.AMQPPort)), time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("port %d still open after the broker stopped", s.AMQPPort)
}

// Close stops the broker and epmd.
func (s *Server) Close() error {
	err := s.stopBroker()
	if s.epmd != nil && s.epmd.Process != nil {
		_ = syscall.Kill(-s.epmd.Process.Pid, syscall.SIGKILL)
		_ = s.epmd.Wait()
		s.epmd = nil
	}
	return err
}

// waitPort waits until something accepts TCP connections on port, the
// process behind exited reports an exit, or the time is up.
func waitPort(ctx context.Context, port int, timeout time.Duration, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited before listening on %d: %v", port, err)
		case <-ctx.Done():
			return fmt.Errorf("nothing listens on %d: %w", port, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
