// Package config reads the agent's oslo-style INI file (/etc/shareless/shareless.conf).
//
// The option set is described once, by the struct tags of [Config]: `ini`
// names the option, `default` holds its default in the file's own syntax and
// `help` documents it. The parser, the defaults and etc/shareless.conf.sample
// are all derived from those tags, so none of them can drift from the others.
//
// Unknown sections and options are errors, not warnings: a misspelt option
// that silently keeps its default is how a host ends up pointing at the wrong
// broker. Every error names the file, the section and the option.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"gopkg.in/ini.v1"
)

// Config is the whole agent configuration. Each field is one INI section.
type Config struct {
	Default    Default           `ini:"DEFAULT" help:"Identity of this host and where the agent keeps its state."`
	AMQP       AMQP              `ini:"amqp" help:"The RabbitMQ broker that carries Nova's versioned notifications."`
	ISCSI      ISCSI             `ini:"iscsi" help:"The iSCSI target that serves managed disks to the local QEMU and to peers."`
	Store      Store             `ini:"store" help:"Where managed disk images live."`
	Libvirt    Libvirt           `ini:"libvirt" help:"The local libvirtd."`
	OpenStack  OpenStack         `ini:"openstack" help:"Credentials for Keystone, Nova and Cinder. Set either cloud or auth_url."`
	Peers      map[string]string `ini:"peers" help:"Static map of Nova compute host name to the address of its agent's control API:\nhost:port, or host alone for the port of [api] listen. Hosts not listed are\nlooked up in Nova (hypervisor host_ip)."`
	API        API               `ini:"api" help:"The control API (agent to agent, storage network) and the local unix socket\n(hook and CLI)."`
	Replicator Replicator        `ini:"replicator" help:"Post-copy replication (design.md section 2)."`
	Cinder     Cinder            `ini:"cinder" help:"Method A: Cinder volumes that an FC-only array also presents over iSCSI, for\nhosts without FC (cinderdriver/README.md)."`
}

// Default is the [DEFAULT] section.
type Default struct {
	Host      string     `ini:"host" default:"" help:"Name of this host as Nova knows it ([DEFAULT] host in nova.conf). Empty means\nthe machine's hostname."`
	LogLevel  slog.Level `ini:"log_level" default:"info" help:"Least severe level logged: debug, info, warn or error."`
	StatePath string     `ini:"state_path" default:"/var/lib/shareless" help:"Directory for the agent's own state (the migration journal)."`
}

// AMQP is the [amqp] section.
type AMQP struct {
	TransportURL    TransportURL  `ini:"transport_url" default:"" help:"oslo.messaging transport URL, rabbit://user:pass@host:port[,user:pass@host:port...]/vhost,\nthe same value as [oslo_messaging_notifications] transport_url (or [DEFAULT]\ntransport_url) in nova.conf. Required."`
	PasswordFile    SecretFile    `ini:"password_file" default:"" help:"File holding the broker password. When set it replaces the password of every\nhost in transport_url, which can then be written without one."`
	Queue           string        `ini:"queue" default:"" help:"This agent's own durable queue. Empty means shareless.<host>. Never use Nova's\nversioned_notifications.info: consumers of one queue compete for messages."`
	Exchange        string        `ini:"exchange" default:"nova" help:"Exchange Nova publishes to (its control_exchange)."`
	ExchangeDurable bool          `ini:"exchange_durable" default:"false" help:"Durability of the exchange when the agent declares it. Must equal Nova's\n[oslo_messaging_rabbit] amqp_durable_queues (or rabbit_quorum_queue), otherwise\nthe broker refuses one of the two declarations. With a non-durable exchange the\nbinding of our queue does not survive a broker restart, and notifications sent\nbetween the restart and the agent's reconnection are lost to the agent."`
	Topic           string        `ini:"topic" default:"versioned_notifications" help:"Nova's [notifications] versioned_notifications_topics. The queue is bound\nwith <topic>.info and <topic>.error."`
	SetAsideQueue   string        `ini:"set_aside_queue" default:"" help:"Durable queue that receives messages the agent cannot parse, unchanged, so\nthat they never block the main queue. Empty means <queue>.unparseable."`
	Prefetch        int           `ini:"prefetch" default:"32" help:"Unacknowledged messages the broker may have in flight to the agent."`
	Heartbeat       time.Duration `ini:"heartbeat" default:"10s" help:"AMQP heartbeat interval."`
	ReconnectMin    time.Duration `ini:"reconnect_min" default:"500ms" help:"First delay before reconnecting to the broker; it doubles on every failure."`
	ReconnectMax    time.Duration `ini:"reconnect_max" default:"30s" help:"Longest delay between reconnection attempts."`
}

// ISCSI is the [iscsi] section.
type ISCSI struct {
	Listen         []string   `ini:"listen" default:"127.0.0.1" help:"Addresses the target listens on, comma separated: 127.0.0.1 for the local\nQEMU plus this host's storage network address for peers."`
	Port           int        `ini:"port" default:"3260" help:"TCP port of the target on every listen address."`
	CHAPUser       string     `ini:"chap_user" default:"shareless" help:"CHAP user name QEMU and peers log in with."`
	CHAPSecretFile SecretFile `ini:"chap_secret_file" default:"" help:"File holding the CHAP secret (12 to 16 bytes for interoperability). Empty\ndisables CHAP, which is only acceptable on a lab network."`
}

// Store is the [store] section.
type Store struct {
	Path          string `ini:"path" default:"/var/lib/shareless/store" help:"Directory of managed disk images (raw, sparse). It must not be under Nova's\ninstances directory, which Nova deletes after a migration. On the same mount\nas that directory (e.g. /var/lib/nova/shareless-store), a raw instance file is\nadopted by hard link: no copy, and Nova's file stays the disk's live data."`
	InstancesPath string `ini:"instances_path" default:"" help:"Nova's instances_path on this host. When set, a disk that finished copying\nhere is linked into its instance's directory (when Nova made it and has no\nfile of that name), so that Nova's file is the disk's live data here too.\nEmpty: never link."`
}

// Libvirt is the [libvirt] section.
type Libvirt struct {
	URI     string `ini:"uri" default:"qemu:///system" help:"libvirt connection URI of the local libvirtd. Empty: this host runs no libvirtd\n(Nova's compute_driver is not libvirt, such as the fake driver of a test\ncloud); the agent then replicates on Nova's notifications alone, and adopts\ndisk files (shareless adopt --file) instead of running domains."`
	Readopt bool   `ini:"readopt" default:"true" help:"When Nova starts an adopted instance again on its files (hard reboot, stop and\nstart, unrescue, a reverted resize), the agent hands the disks back to Nova for\nthe start and, when this is true, adopts the instance again as soon as it runs.\nfalse: it stays on its files until shareless adopt."`
}

// OpenStack is the [openstack] section.
type OpenStack struct {
	Cloud             string     `ini:"cloud" default:"" help:"Entry of clouds.yaml to use (the standard search path applies). Exclusive\nwith auth_url."`
	AuthURL           string     `ini:"auth_url" default:"" help:"Keystone URL, for example http://controller:5000/v3."`
	Username          string     `ini:"username" default:"" help:"Keystone user."`
	PasswordFile      SecretFile `ini:"password_file" default:"" help:"File holding the Keystone password."`
	ProjectName       string     `ini:"project_name" default:"" help:"Project to scope the token to."`
	UserDomainName    string     `ini:"user_domain_name" default:"Default" help:"Domain of the user."`
	ProjectDomainName string     `ini:"project_domain_name" default:"Default" help:"Domain of the project."`
	RegionName        string     `ini:"region_name" default:"" help:"Region of the endpoints; empty means the only one."`
	Interface         string     `ini:"interface" default:"internal" help:"Endpoint interface: public, internal or admin."`
}

// API is the [api] section.
type API struct {
	Listen        string     `ini:"listen" default:"127.0.0.1:3270" help:"host:port of the control API peers call. Set it to this host's storage network\naddress."`
	PSKFile       SecretFile `ini:"psk_file" default:"" help:"File holding the pre-shared key agents authenticate each other with. Required\nwhen listen is not a loopback address."`
	Socket        string     `ini:"socket" default:"/run/shareless/agent.sock" help:"Unix socket of the local API (libvirt hook and CLI)."`
	MetricsListen string     `ini:"metrics_listen" default:"127.0.0.1:9470" help:"host:port of the Prometheus /metrics endpoint (no authentication: counters and\ninstance UUIDs only). Empty disables it."`
}

// The values of [replicator] method.
const (
	MethodCopy   = "copy"   // Method C
	MethodRemote = "remote" // Method B
)

// Replicator is the [replicator] section.
type Replicator struct {
	Grain          Size          `ini:"grain" default:"16KiB" help:"Tracking granularity of the valid and modified bitmaps: a power of two, at\nleast 512 bytes. The way back moves whole blocks of this size: 16KiB moves 35%\nof a disk whose guest rewrote 10% in scattered pages (64KiB: 84%), for 16MiB\nof agent memory per TiB (replicator.DefaultGrain)."`
	Chunk          Size          `ini:"chunk" default:"1MiB" help:"Unit of the sequential post-copy: a multiple of grain. A guest write waits\nfor at most one chunk being stored (replicator.DefaultChunk)."`
	Method         string        `ini:"method" default:"copy" help:"How a destination's replicas get the disk after the switch-over: copy (Method\nC: a background copy and copy-on-read until the disk is local) or remote\n(Method B: blocks the guest did not write here are read from the source, and\nnothing is copied until 'shareless copy-now INSTANCE' switches the instance to\ncopying). Under remote the source host must stay up while the guest runs here."`
	BandwidthLimit Size          `ini:"bandwidth_limit" default:"0" help:"Bytes per second the copier may read from a source; 0 means unlimited."`
	SourceTimeout  time.Duration `ini:"source_timeout" default:"2m" help:"How long reads wait for an unreachable source before failing with an error."`
	HookWait       time.Duration `ini:"hook_wait" default:"50s" help:"How long the libvirt migrate hook waits for replicas to be ready before it\nrefuses the migration. Keep it below the hook's own bound (shareless hook\n--timeout, 60s), so that libvirt logs the agent's reason, not a timeout."`
}

// Cinder is the [cinder] section.
type Cinder struct {
	TransportMap string `ini:"transport_map" default:"" help:"The transport map (JSON; the same file as on the Cinder volume nodes): each\narray's iSCSI targets and their CHAP. When set, the migrate hook turns a volume\ndisk that Cinder presented to this host as os-brick's iSCSI by-path name, and\nthat no kernel initiator attached here, into a QEMU-native iSCSI disk. Empty:\nMethod A is off."`
	InitiatorIQN string `ini:"initiator_iqn" default:"" help:"The initiator name QEMU logs in to the arrays with (the array's carrier host\nobject must list it). Required with transport_map."`
}

// Error is a configuration error. It names the file and, when the error is
// about one option, the section and option, so that an operator can fix it
// without reading code.
type Error struct {
	File    string
	Section string // empty for errors about the whole file
	Option  string // empty for errors about a whole section
	Err     error
}

func (e *Error) Error() string {
	switch {
	case e.Section == "":
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	case e.Option == "":
		return fmt.Sprintf("%s: [%s]: %v", e.File, e.Section, e.Err)
	default:
		return fmt.Sprintf("%s: [%s] %s: %v", e.File, e.Section, e.Option, e.Err)
	}
}

func (e *Error) Unwrap() error { return e.Err }

// ErrUnknown is wrapped by errors about sections or options the agent does not know.
var ErrUnknown = errors.New("unknown")

// Defaults returns the configuration with every option at its default.
func Defaults() Config {
	var c Config
	if err := setDefaults(&c); err != nil {
		// The defaults are constants in this file; TestDefaultsParse covers them.
		panic(err)
	}
	return c
}

// Load reads and validates the file at path. Secret files named in it are
// read too, and an empty [DEFAULT] host becomes the machine's hostname.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, &Error{File: path, Err: err}
	}
	c, err := Parse(path, data)
	if err != nil {
		return Config{}, err
	}
	if c.Default.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return Config{}, &Error{File: path, Section: "DEFAULT", Option: "host", Err: fmt.Errorf("empty and the hostname is unknown: %w", err)}
		}
		c.Default.Host = h
	}
	if err := c.Validate(path); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Parse parses data, named name in errors, on top of the defaults. It does
// not validate the combination of options; see [Config.Validate].
func Parse(name string, data []byte) (Config, error) {
	f, err := ini.LoadSources(ini.LoadOptions{
		// oslo.config has no inline comments: '#' may be part of a password.
		IgnoreInlineComment: true,
		// Section and option names are case sensitive in oslo.config.
		Insensitive: false,
	}, data)
	if err != nil {
		// ini's messages end in a newline and carry no useful type.
		return Config{}, &Error{File: name, Err: fmt.Errorf("syntax: %s", strings.TrimSpace(err.Error()))}
	}
	c := Defaults()
	if err := decode(name, f, &c); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks what single options cannot: required options and options
// that depend on each other. file names the source in errors.
func (c *Config) Validate(file string) error {
	bad := func(section, option, format string, a ...any) error {
		return &Error{File: file, Section: section, Option: option, Err: fmt.Errorf(format, a...)}
	}
	if len(c.AMQP.TransportURL.Hosts) == 0 {
		return bad("amqp", "transport_url", "required")
	}
	if c.AMQP.Prefetch < 1 {
		return bad("amqp", "prefetch", "must be at least 1, is %d", c.AMQP.Prefetch)
	}
	if c.AMQP.ReconnectMin <= 0 || c.AMQP.ReconnectMax < c.AMQP.ReconnectMin {
		return bad("amqp", "reconnect_max", "must be at least reconnect_min (%v), is %v", c.AMQP.ReconnectMin, c.AMQP.ReconnectMax)
	}
	if c.ISCSI.Port < 1 || c.ISCSI.Port > 65535 {
		return bad("iscsi", "port", "not a TCP port: %d", c.ISCSI.Port)
	}
	if len(c.ISCSI.Listen) == 0 {
		return bad("iscsi", "listen", "required")
	}
	if c.OpenStack.Cloud != "" && c.OpenStack.AuthURL != "" {
		return bad("openstack", "auth_url", "set either cloud or auth_url, not both")
	}
	if c.OpenStack.AuthURL != "" {
		if c.OpenStack.Username == "" {
			return bad("openstack", "username", "required with auth_url")
		}
		if c.OpenStack.PasswordFile.Path == "" {
			return bad("openstack", "password_file", "required with auth_url")
		}
	}
	switch c.OpenStack.Interface {
	case "public", "internal", "admin":
	default:
		return bad("openstack", "interface", "must be public, internal or admin, is %q", c.OpenStack.Interface)
	}
	g := c.Replicator.Grain
	if g < 512 || g&(g-1) != 0 {
		return bad("replicator", "grain", "must be a power of two of at least 512 bytes, is %v", g)
	}
	if ch := c.Replicator.Chunk; ch < g || ch%g != 0 {
		return bad("replicator", "chunk", "must be a multiple of grain (%v), is %v", g, ch)
	}
	if m := c.Replicator.Method; m != MethodCopy && m != MethodRemote {
		return bad("replicator", "method", "must be %s or %s, is %q", MethodCopy, MethodRemote, m)
	}
	if c.Replicator.SourceTimeout <= 0 {
		return bad("replicator", "source_timeout", "must be positive")
	}
	if c.Replicator.HookWait <= 0 {
		return bad("replicator", "hook_wait", "must be positive")
	}
	if c.API.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.API.MetricsListen); err != nil {
			return bad("api", "metrics_listen", "not host:port: %v", err)
		}
	}
	if c.Cinder.TransportMap != "" && c.Cinder.InitiatorIQN == "" {
		return bad("cinder", "initiator_iqn", "required with transport_map")
	}
	if !isLoopback(c.API.Listen) && c.API.PSKFile.Path == "" {
		return bad("api", "psk_file", "required when listen (%s) is not a loopback address", c.API.Listen)
	}
	return nil
}

// QueueName is the agent's queue: [amqp] queue, or shareless.<host>.
func (c *Config) QueueName() string {
	if c.AMQP.Queue != "" {
		return c.AMQP.Queue
	}
	return "shareless." + c.Default.Host
}

// SetAsideQueueName is where unparseable messages go: [amqp] set_aside_queue,
// or <queue>.unparseable.
func (c *Config) SetAsideQueueName() string {
	if c.AMQP.SetAsideQueue != "" {
		return c.AMQP.SetAsideQueue
	}
	return c.QueueName() + ".unparseable"
}

// BrokerHosts returns the broker hosts of transport_url with [amqp]
// password_file applied.
func (c *Config) BrokerHosts() []BrokerHost {
	hosts := append([]BrokerHost(nil), c.AMQP.TransportURL.Hosts...)
	if c.AMQP.PasswordFile.Path != "" {
		for i := range hosts {
			hosts[i].Password = c.AMQP.PasswordFile.Secret
		}
	}
	return hosts
}
