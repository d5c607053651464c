// Tests of the devstack plugin: every phase of plugin.sh runs under the
// recorded devstack function contract of testdata/contract.sh, with files
// written under a temporary root, the binary really built and installed,
// and the configuration read back by the agent's own config package.
package devstack_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shareless/shareless/config"
	"github.com/shareless/shareless/internal/testenv"
)

const (
	servicePassword = "s3rvice-pw"
	rabbitPassword  = "r@bbit:pw%" // percent-encoded in the URL below
	rabbitURLPass   = "r%40bbit%3Apw%25"
	hostIP          = "192.0.2.11"
	serviceHost     = "192.0.2.10"
)

// novaConf is the part of nova.conf devstack's lib/nova writes that the
// plugin reads or changes; notification_format is what an operator who
// set NOVA_NOTIFICATION_FORMAT=unversioned in local.conf would have.
const novaConf = `# nova.conf written by devstack
[DEFAULT]
host = compute1
transport_url = rabbit://stackrabbit:x@192.0.2.10:5672/

[notifications]
notification_format = unversioned

[oslo_messaging_notifications]
transport_url = rabbit://stackrabbit:x@192.0.2.10:5672/

[oslo_messaging_rabbit]
amqp_durable_queues = True
`

// stack is one host's devstack: a temporary root, the environment stack.sh
// would have, and the log of recorded calls.
type stack struct {
	t    *testing.T
	root string
	env  map[string]string
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func newStack(t *testing.T) *stack {
	t.Helper()
	testenv.NeedCommands(t, "bash", "/usr/bin/python3", "sha256sum", "go")
	root := t.TempDir()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, root: root, env: map[string]string{
		"CONTRACT_LOG":         filepath.Join(root, "contract.log"),
		"CONTRACT_ROOT":        root,
		"DEST":                 filepath.Join(root, "opt/stack"),
		"DATA_DIR":             filepath.Join(root, "opt/stack/data"),
		"NOVA_CONF":            filepath.Join(root, "etc/nova/nova.conf"),
		"HOST_IP":              hostIP,
		"SERVICE_HOST":         serviceHost,
		"SERVICE_PASSWORD":     servicePassword,
		"SERVICE_PROJECT_NAME": "service",
		"SERVICE_DOMAIN_NAME":  "Default",
		"REGION_NAME":          "RegionOne",
		"KEYSTONE_SERVICE_URI": "http://" + serviceHost + "/identity",
		"RABBIT_USERID":        "stackrabbit",
		"RABBIT_PASSWORD":      rabbitURLPass,
		"RABBIT_HOST":          serviceHost,
		// A compute node of a multi-node devstack.
		"ENABLED_SERVICES": "n-cpu,placement-client,q-agt",
		// The clone is this repository; system paths go under root.
		"SHARELESS_DIR":              repoRoot(t),
		"SHARELESS_BIN_DIR":          filepath.Join(root, "usr/local/bin"),
		"SHARELESS_CONF_DIR":         filepath.Join(root, "etc/shareless"),
		"SHARELESS_LIBVIRT_HOOK_DIR": filepath.Join(root, "etc/libvirt/hooks/qemu.d"),
		"SHARELESS_SOCKET":           filepath.Join(root, "run/shareless/agent.sock"),
		"SHARELESS_USER":             u.Username,
	}}
	if err := os.MkdirAll(filepath.Dir(s.env["NOVA_CONF"]), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.env["NOVA_CONF"], []byte(novaConf), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stack) path(rel string) string { return filepath.Join(s.root, rel) }

// run sources the contract, settings and override-defaults as stack.sh
// does, then plugin.sh once per phase ("stack install", "unstack", ...),
// all in one shell, under errexit and nounset (stricter than devstack, so
// that an unset variable is an error here). It returns the shell's output.
func (s *stack) run(phases ...string) (string, error) {
	s.t.Helper()
	dir := filepath.Join(repoRoot(s.t), "devstack")
	script := `set -o errexit -o nounset -o pipefail
source "$1/testdata/contract.sh"
source "$1/settings"
source "$1/override-defaults"
plugin=$1
shift
for phase in "$@"; do
	echo "== $phase" >>"$CONTRACT_LOG"
	# shellcheck disable=SC2086 # the phase is "MODE [PHASE]"
	source "$plugin/plugin.sh" $phase
done
`
	cmd := exec.Command("bash", append([]string{"-c", script, "stack-sh", dir}, phases...)...)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PATH" || k == "HOME" || k == "TMPDIR" || strings.HasPrefix(k, "GO") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *stack) mustRun(phases ...string) {
	s.t.Helper()
	if out, err := s.run(phases...); err != nil {
		s.t.Fatalf("plugin.sh %v: %v\n%s", phases, err, out)
	}
}

// calls returns the recorded calls of one phase, each as a string of
// %q-quoted words.
func (s *stack) calls(phase string) []string {
	s.t.Helper()
	b, err := os.ReadFile(s.env["CONTRACT_LOG"])
	if err != nil {
		s.t.Fatal(err)
	}
	var got []string
	in := false
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if p, ok := strings.CutPrefix(l, "== "); ok {
			in = p == phase
			continue
		}
		if in {
			got = append(got, l)
		}
	}
	return got
}

// q quotes words as the contract's log does, by asking bash's printf %q.
func q(words ...string) string {
	out, err := exec.Command("bash", append([]string{"-c", `line=$(printf ' %q' "$@"); echo "${line# }"`, "q"}, words...)...).Output()
	if err != nil {
		panic(err)
	}
	return strings.TrimSuffix(string(out), "\n")
}

func indexOf(t *testing.T, calls []string, want string) int {
	t.Helper()
	i := slices.Index(calls, want)
	if i < 0 {
		t.Fatalf("no call %s among\n%s", want, strings.Join(calls, "\n"))
	}
	return i
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func derived(label string, n int) string {
	sum := sha256.Sum256([]byte("shareless-" + label + ":" + servicePassword))
	return hex.EncodeToString(sum[:])[:n]
}

func TestPluginStackUnstackClean(t *testing.T) {
	s := newStack(t)
	s.mustRun("stack pre-install", "stack install", "stack post-config", "stack extra")

	bin := s.path("usr/local/bin/shareless")
	hook := s.path("etc/libvirt/hooks/qemu.d/shareless")
	conf := s.path("etc/shareless/shareless.conf")
	state := s.path("opt/stack/data/shareless")

	t.Run("install builds the binary and installs the hook, then restarts libvirtd", func(t *testing.T) {
		calls := s.calls("stack install")
		installHook := -1
		for i, c := range calls {
			if strings.HasPrefix(c, "sudo install -D -m 0755 ") && strings.HasSuffix(c, " "+q(hook)) {
				installHook = i
			}
		}
		if installHook < 0 {
			t.Fatalf("hook not installed with mode 0755:\n%s", strings.Join(calls, "\n"))
		}
		if restart := indexOf(t, calls, "restart_service libvirtd"); restart < installHook {
			t.Errorf("libvirtd restarted (call %d) before the hook was installed (call %d)", restart, installHook)
		}
		if m := mode(t, bin); m != 0o755 {
			t.Errorf("binary mode %v", m)
		}
		if out, err := exec.Command(bin, "help").CombinedOutput(); err != nil || !strings.Contains(string(out), "agent") {
			t.Errorf("installed binary: shareless help: %v\n%s", err, out)
		}
		want := "#!/bin/sh\n" +
			"# shareless's libvirt qemu hook, installed by its devstack plugin.\n" +
			"# It asks the local agent, never libvirt; see 'shareless help hook'.\n" +
			"exec " + bin + " hook --socket " + s.env["SHARELESS_SOCKET"] + " --state-dir " + state + ` qemu "$@"` + "\n"
		got, err := os.ReadFile(hook)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("hook:\n%s\nwant:\n%s", got, want)
		}
		if m := mode(t, hook); m != 0o755 {
			t.Errorf("hook mode %v", m)
		}
	})

	t.Run("the installed hook passes libvirt's arguments to the binary", func(t *testing.T) {
		// No agent runs: the hook lets a domain without managed disks
		// through and refuses one whose disk the local agent serves.
		plain := `<domain><devices><disk type='file'><source file='/var/lib/nova/instances/x/disk'/></disk></devices></domain>`
		managed := `<domain><devices><disk type='network'><source protocol='iscsi' name='iqn.2026-11.io.shareless:x.disk/0'><host name='127.0.0.1' port='3261'/></source></disk></devices></domain>`
		for _, c := range []struct {
			xml    string
			refuse bool
		}{{plain, false}, {managed, true}} {
			cmd := exec.Command(hook, "instance-00000001", "prepare", "begin", "-")
			cmd.Stdin = strings.NewReader(c.xml)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			switch {
			case c.refuse && !errors.As(err, &exit):
				t.Errorf("managed disk, no agent: hook exit %v, want a refusal; stderr %q", err, stderr.String())
			case c.refuse && !strings.Contains(stderr.String(), "instance-00000001 prepare begin"):
				t.Errorf("refusal does not name the domain and operation: %q", stderr.String())
			case !c.refuse && err != nil:
				t.Errorf("plain disk: hook %v; stderr %q", err, stderr.String())
			case stdout.Len() != 0:
				t.Errorf("hook printed XML: %q", stdout.String())
			}
		}
	})

	t.Run("post-config writes a configuration the agent loads", func(t *testing.T) {
		cfg, err := config.Load(conf)
		if err != nil {
			t.Fatal(err)
		}
		check := func(name string, got, want any) {
			t.Helper()
			if got != want {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
		}
		check("[DEFAULT] host", cfg.Default.Host, "compute1")
		check("[DEFAULT] state_path", cfg.Default.StatePath, state)
		hosts := cfg.BrokerHosts()
		if len(hosts) != 1 {
			t.Fatalf("broker hosts %v", cfg.AMQP.TransportURL)
		}
		check("broker", hosts[0].Addr(), serviceHost+":5672")
		check("broker user", hosts[0].Username, "stackrabbit")
		check("broker password (from password_file)", hosts[0].Password.Reveal(), rabbitPassword)
		check("[amqp] password_file", cfg.AMQP.PasswordFile.Path, s.path("etc/shareless/rabbit.password"))
		check("[amqp] exchange_durable (Nova's amqp_durable_queues)", cfg.AMQP.ExchangeDurable, true)
		check("[amqp] exchange", cfg.AMQP.Exchange, "nova")
		check("[amqp] topic", cfg.AMQP.Topic, "versioned_notifications")
		check("[iscsi] listen", strings.Join(cfg.ISCSI.Listen, ","), "127.0.0.1,"+hostIP)
		check("[iscsi] port", cfg.ISCSI.Port, 3261)
		check("[iscsi] chap_user", cfg.ISCSI.CHAPUser, "shareless")
		check("CHAP secret", cfg.ISCSI.CHAPSecretFile.Secret.Reveal(), derived("chap", 16))
		check("[store] path", cfg.Store.Path, filepath.Join(state, "store"))
		check("[store] instances_path", cfg.Store.InstancesPath, s.env["DATA_DIR"]+"/nova/instances")
		check("[openstack] auth_url", cfg.OpenStack.AuthURL, "http://"+serviceHost+"/identity/v3")
		check("[openstack] username", cfg.OpenStack.Username, "nova")
		check("Keystone password", cfg.OpenStack.PasswordFile.Secret.Reveal(), servicePassword)
		check("[openstack] project_name", cfg.OpenStack.ProjectName, "service")
		check("[openstack] region_name", cfg.OpenStack.RegionName, "RegionOne")
		check("[openstack] interface", cfg.OpenStack.Interface, "public")
		check("[api] listen", cfg.API.Listen, hostIP+":3270")
		check("PSK", cfg.API.PSKFile.Secret.Reveal(), derived("psk", 64))
		check("[api] socket", cfg.API.Socket, s.env["SHARELESS_SOCKET"])
		check("[api] metrics_listen", cfg.API.MetricsListen, "127.0.0.1:9470")
		for _, f := range []string{"chap.secret", "api.psk", "keystone.password", "rabbit.password"} {
			if m := mode(t, s.path("etc/shareless/"+f)); m != 0o600 {
				t.Errorf("%s mode %v, want 0600", f, m)
			}
		}
		raw, _ := os.ReadFile(conf)
		if strings.Contains(string(raw), rabbitURLPass) || strings.Contains(string(raw), servicePassword) {
			t.Errorf("a password is in %s:\n%s", conf, raw)
		}
		if m := mode(t, state); m != 0o700 {
			t.Errorf("state directory mode %v", m)
		}
	})

	t.Run("post-config turns on Nova's versioned notifications", func(t *testing.T) {
		calls := s.calls("stack post-config")
		indexOf(t, calls, q("iniset", s.env["NOVA_CONF"], "notifications", "notification_format", "both"))
		warned := false
		for _, c := range calls {
			warned = warned || strings.HasPrefix(c, "warn ")
		}
		if !warned {
			t.Error("no warning when replacing notification_format=unversioned")
		}
		got, _ := os.ReadFile(s.env["NOVA_CONF"])
		for _, want := range []string{"# nova.conf written by devstack\n", "notification_format = both\n", "driver = messagingv2\n", "amqp_durable_queues = True\n"} {
			if !strings.Contains(string(got), want) {
				t.Errorf("nova.conf lacks %q:\n%s", want, got)
			}
		}
	})

	t.Run("extra starts the agent with run_process", func(t *testing.T) {
		calls := s.calls("stack extra")
		cmdline := bin + " agent --config-file " + conf
		indexOf(t, calls, q("run_process", "shareless-agent", cmdline, "", s.env["SHARELESS_USER"]))
		got, err := os.ReadFile(s.path("run/shareless-agent"))
		if err != nil || string(got) != cmdline+"\n" {
			t.Errorf("running service: %q %v", got, err)
		}
	})

	t.Run("post-config again starts from a fresh file", func(t *testing.T) {
		f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("[bogus]\nleft = over\n")
		f.Close()
		s.mustRun("stack post-config")
		if _, err := config.Load(conf); err != nil {
			t.Errorf("after a second post-config: %v", err)
		}
	})

	s.mustRun("unstack")
	t.Run("unstack stops the agent and leaves the hook", func(t *testing.T) {
		indexOf(t, s.calls("unstack"), "stop_process shareless-agent")
		if _, err := os.Stat(s.path("run/shareless-agent")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("agent still running after unstack: %v", err)
		}
		// The hook refuses to start VMs whose disks need the stopped
		// agent; removing it would let them boot without their disks.
		if _, err := os.Stat(hook); err != nil {
			t.Errorf("hook: %v", err)
		}
	})

	s.mustRun("clean")
	t.Run("clean removes what stack made", func(t *testing.T) {
		for _, p := range []string{hook, bin, s.path("etc/shareless"), state} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s after clean: %v", p, err)
			}
		}
	})
}

func TestPluginIdleWithoutNovaCompute(t *testing.T) {
	s := newStack(t)
	s.env["ENABLED_SERVICES"] = "key,n-api,n-cond,n-sch,placement-api"
	s.mustRun("stack pre-install", "stack install", "stack post-config", "stack extra", "unstack", "clean")
	for _, phase := range []string{"stack install", "stack post-config", "stack extra"} {
		if calls := s.calls(phase); len(calls) != 0 {
			t.Errorf("%s on a host without n-cpu: %v", phase, calls)
		}
	}
	for _, p := range []string{"usr/local/bin/shareless", "etc/shareless", "etc/libvirt"} {
		if _, err := os.Stat(s.path(p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestPluginRefusesOldGo(t *testing.T) {
	s := newStack(t)
	fake := s.path("old-go")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho go1.19.8\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.env["SHARELESS_GO"] = fake
	out, err := s.run("stack pre-install")
	if err == nil || !strings.Contains(out, "go1.19.8; Go 1.21 or later is needed") {
		t.Fatalf("pre-install with go1.19: %v\n%s", err, out)
	}
}

func TestOverrideDefaults(t *testing.T) {
	for _, c := range []struct{ set, want string }{{"", "both"}, {"versioned", "versioned"}} {
		cmd := exec.Command("bash", "-c", `source devstack/override-defaults; echo "$NOVA_NOTIFICATION_FORMAT"`)
		cmd.Dir = repoRoot(t)
		cmd.Env = []string{"NOVA_NOTIFICATION_FORMAT=" + c.set}
		out, err := cmd.Output()
		if err != nil || strings.TrimSpace(string(out)) != c.want {
			t.Errorf("NOVA_NOTIFICATION_FORMAT=%q: %q %v, want %q", c.set, out, err, c.want)
		}
	}
}

func TestPluginSecretsAndAddressesGiven(t *testing.T) {
	s := newStack(t)
	// The operator placed the PSK; local.conf gives the CHAP secret and the
	// storage network address.
	psk := s.path("etc/shareless/api.psk")
	if err := os.MkdirAll(filepath.Dir(psk), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(psk, []byte("operator-placed-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.env["SHARELESS_CHAP_SECRET"] = "given-secret-15"
	s.env["SHARELESS_CHAP_SECRET_FILE"] = s.path("etc/keys/shareless-chap") // a directory of its own
	s.env["SHARELESS_STORAGE_IP"] = "198.51.100.7"
	s.mustRun("stack post-config")
	cfg, err := config.Load(s.path("etc/shareless/shareless.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"PSK", cfg.API.PSKFile.Secret.Reveal(), "operator-placed-key"},
		{"[iscsi] chap_secret_file", cfg.ISCSI.CHAPSecretFile.Path, s.env["SHARELESS_CHAP_SECRET_FILE"]},
		{"CHAP secret", cfg.ISCSI.CHAPSecretFile.Secret.Reveal(), "given-secret-15"},
		{"[iscsi] listen", strings.Join(cfg.ISCSI.Listen, ","), "127.0.0.1,198.51.100.7"},
		{"[api] listen", cfg.API.Listen, "198.51.100.7:3270"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

// TestPluginMethodA: local.conf's transport map and initiator name reach
// [cinder]; a map without the initiator name stops stack.sh with the
// setting to add instead of an agent that refuses to start.
func TestPluginMethodA(t *testing.T) {
	s := newStack(t)
	s.env["SHARELESS_CINDER_TRANSPORT_MAP"] = "/etc/shareless/transport.json"
	out, err := s.run("stack post-config")
	if err == nil || !strings.Contains(out, "SHARELESS_CINDER_TRANSPORT_MAP needs SHARELESS_CINDER_INITIATOR_IQN") {
		t.Fatalf("post-config with a map and no initiator name: %v\n%s", err, out)
	}
	s.env["SHARELESS_CINDER_INITIATOR_IQN"] = "iqn.2026-11.org.example:compute2"
	s.mustRun("stack post-config")
	cfg, err := config.Load(s.path("etc/shareless/shareless.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cinder.TransportMap != "/etc/shareless/transport.json" || cfg.Cinder.InitiatorIQN != "iqn.2026-11.org.example:compute2" {
		t.Errorf("[cinder] = %+v", cfg.Cinder)
	}
}
