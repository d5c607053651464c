package config

import (
	"errors"
	"fmt"
	"github.com/shareless/shareless/internal/secret"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// SecretFile is an option naming a file that holds a secret. The file is
// read when the configuration is parsed, so that a missing or unreadable file
// is reported with the option that names it, at start-up.
type SecretFile struct {
	Path   string
	Secret secret.Secret
}

func parseSecretFile(s string, readFile func(string) ([]byte, error)) (SecretFile, error) {
	if s == "" {
		return SecretFile{}, nil
	}
	b, err := readFile(s)
	if err != nil {
		return SecretFile{}, err
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return SecretFile{}, fmt.Errorf("%s is empty", s)
	}
	return SecretFile{Path: s, Secret: secret.New(v)}, nil
}

// Size is a byte count written with an optional binary suffix (KiB, MiB, GiB,
// TiB) or as a plain number of bytes.
type Size int64

var sizeUnits = []struct {
	suffix string
	n      Size
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

func parseSize(s string) (Size, error) {
	mult := Size(1)
	num := s
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult, num = u.n, strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("not a size (like 4MiB or 65536): %q", s)
	}
	if n > int64(^uint64(0)>>1)/int64(mult) {
		return 0, fmt.Errorf("size too large: %q", s)
	}
	return Size(n) * mult, nil
}

// String writes the size with the largest suffix that divides it exactly.
func (z Size) String() string {
	for _, u := range sizeUnits {
		if z != 0 && z%u.n == 0 {
			return strconv.FormatInt(int64(z/u.n), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(z), 10)
}

// BrokerHost is one broker of a transport URL.
type BrokerHost struct {
	Username string
	Password secret.Secret
	Host     string
	Port     int
}

// Addr is host:port, ready for net.Dial.
func (h BrokerHost) Addr() string { return net.JoinHostPort(h.Host, strconv.Itoa(h.Port)) }

// TransportURL is an oslo.messaging rabbit transport URL. Like oslo, it takes
// several comma-separated hosts, each with its own credentials, and one
// virtual host.
type TransportURL struct {
	Hosts       []BrokerHost
	VirtualHost string
}

// String is the URL with passwords redacted.
func (u TransportURL) String() string {
	if len(u.Hosts) == 0 {
		return ""
	}
	parts := make([]string, len(u.Hosts))
	for i, h := range u.Hosts {
		cred := ""
		if h.Username != "" {
			cred = url.User(h.Username).String()
			if !h.Password.IsZero() {
				cred += ":" + secret.Redacted
			}
			cred += "@"
		}
		parts[i] = cred + h.Addr()
	}
	vhost := u.VirtualHost
	if vhost == "/" {
		vhost = ""
	}
	return "rabbit://" + strings.Join(parts, ",") + "/" + url.PathEscape(vhost)
}

// LogValue keeps passwords out of logs.
func (u TransportURL) LogValue() slog.Value { return slog.StringValue(u.String()) }

// defaultAMQPPort is RabbitMQ's AMQP 0-9-1 port, which oslo assumes too.
const defaultAMQPPort = 5672

func parseTransportURL(s string) (TransportURL, error) {
	if s == "" {
		return TransportURL{}, nil
	}
	rest, ok := strings.CutPrefix(s, "rabbit://")
	if !ok {
		return TransportURL{}, errors.New("must start with rabbit://")
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		// oslo accepts driver options as a query; none matter to the agent.
		rest = rest[:i]
	}
	netloc, path, _ := strings.Cut(rest, "/")
	vhost, err := url.PathUnescape(path)
	if err != nil {
		return TransportURL{}, fmt.Errorf("virtual host: %w", err)
	}
	if vhost == "" {
		// As kombu does: an empty path is the default virtual host.
		vhost = "/"
	}
	u := TransportURL{VirtualHost: vhost}
	for _, part := range strings.Split(netloc, ",") {
		h, err := parseBrokerHost(part)
		if err != nil {
			return TransportURL{}, err
		}
		u.Hosts = append(u.Hosts, h)
	}
	return u, nil
}

func parseBrokerHost(s string) (BrokerHost, error) {
	var h BrokerHost
	hostport := s
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		user, pass, _ := strings.Cut(s[:i], ":")
		var err1, err2 error
		h.Username, err1 = url.PathUnescape(user)
		p, err2 := url.PathUnescape(pass)
		if err := errors.Join(err1, err2); err != nil {
			return BrokerHost{}, fmt.Errorf("credentials of a host: %w", err)
		}
		h.Password = secret.New(p)
		hostport = s[i+1:]
	}
	if hostport == "" {
		return BrokerHost{}, errors.New("empty host")
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: the whole thing is the host (an IPv6 literal keeps its brackets off).
		h.Host, h.Port = strings.Trim(hostport, "[]"), defaultAMQPPort
		return h, nil
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return BrokerHost{}, fmt.Errorf("bad port in %q", hostport)
	}
	if host == "" {
		return BrokerHost{}, fmt.Errorf("empty host in %q", hostport)
	}
	h.Host, h.Port = host, p
	return h, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("not a log level (debug, info, warn, error): %q", s)
	}
	return l, nil
}

// isLoopback reports whether a host:port listens on loopback only.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
