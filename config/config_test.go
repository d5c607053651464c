package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/shareless/shareless/internal/secret"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite etc/shareless.conf.sample")

const samplePath = "../etc/shareless.conf.sample"

func TestSampleIsGenerated(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteSample(&buf); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(samplePath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(samplePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf.Bytes()) {
		t.Fatalf("%s is stale; run go test ./config -update", samplePath)
	}
}

var sampleOption = regexp.MustCompile(`^#([a-z0-9_]+) =( .*)?$`)

// TestSampleCoversEveryOption reads the checked-in sample, not the generator:
// every option of every section must be in it, under its section.
func TestSampleCoversEveryOption(t *testing.T) {
	data, err := os.ReadFile(samplePath)
	if err != nil {
		t.Fatal(err)
	}
	inSample := map[string]bool{}
	sec := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "[") {
			sec = strings.Trim(line, "[]")
		}
		if m := sampleOption.FindStringSubmatch(line); m != nil {
			inSample[sec+"."+m[1]] = true
		}
	}
	n := 0
	for _, s := range schema() {
		for _, o := range s.options {
			n++
			if !inSample[s.name+"."+o.name] {
				t.Errorf("[%s] %s missing from the sample", s.name, o.name)
			}
			if strings.TrimSpace(o.help) == "" {
				t.Errorf("[%s] %s has no help text", s.name, o.name)
			}
		}
	}
	if n < 30 {
		t.Fatalf("schema has only %d options; is reflection broken?", n)
	}
}

// TestSampleOptionsParse uncomments every option of the sample: each must
// parse, and the result must be the defaults.
func TestSampleOptionsParse(t *testing.T) {
	data, err := os.ReadFile(samplePath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if sampleOption.MatchString(line) {
			line = line[1:]
		}
		out = append(out, line)
	}
	c, err := Parse("sample", []byte(strings.Join(out, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Peers["compute2"] = "192.0.2.12:3270" // the sample's example
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("uncommented sample != defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestDefaults(t *testing.T) {
	c := Defaults()
	c.Default.Host = "compute1"
	if got := c.QueueName(); got != "shareless.compute1" {
		t.Errorf("queue = %q", got)
	}
	if got := c.SetAsideQueueName(); got != "shareless.compute1.unparseable" {
		t.Errorf("set-aside queue = %q", got)
	}
	if c.AMQP.Exchange != "nova" || c.AMQP.Topic != "versioned_notifications" || c.AMQP.ExchangeDurable {
		t.Errorf("amqp defaults do not match oslo.messaging's: %+v", c.AMQP)
	}
	if c.Replicator.Grain != 16<<10 || c.Replicator.Chunk != 1<<20 || c.Replicator.HookWait != 50*time.Second || c.Replicator.Method != MethodCopy {
		t.Errorf("replicator defaults: %+v", c.Replicator)
	}
	if c.Default.LogLevel != slog.LevelInfo || c.ISCSI.Port != 3260 || !reflect.DeepEqual(c.ISCSI.Listen, []string{"127.0.0.1"}) {
		t.Errorf("defaults: %+v %+v", c.Default, c.ISCSI)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFull(t *testing.T) {
	dir := t.TempDir()
	amqpPw := writeFile(t, dir, "amqp.pw", "broker#secret\n")
	chap := writeFile(t, dir, "chap", "chapsecret1234")
	psk := writeFile(t, dir, "psk", "pre-shared")
	conf := writeFile(t, dir, "shareless.conf", fmt.Sprintf(`
[DEFAULT]
host = compute1
log_level = debug

[amqp]
transport_url = rabbit://nova:pw1@10.0.0.1:5673,nova:pw2@[fd00::2],10.0.0.3/nova%%2Fcell1
password_file = %s
queue = my.queue
exchange_durable = yes
reconnect_max = 60

[iscsi]
listen = 127.0.0.1, 10.1.0.11
chap_secret_file = %s

[openstack]
cloud = mycloud

[peers]
compute2 = 10.1.0.12:3270
compute3 = 10.1.0.13

[api]
listen = 10.1.0.11:3270
psk_file = %s

[replicator]
grain = 4096
chunk = 1MiB
bandwidth_limit = 100MiB
source_timeout = 90s
`, amqpPw, chap, psk))
	c, err := Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	if c.Default.Host != "compute1" || c.Default.LogLevel != slog.LevelDebug || c.QueueName() != "my.queue" {
		t.Errorf("DEFAULT/queue: %+v %q", c.Default, c.QueueName())
	}
	u := c.AMQP.TransportURL
	if u.VirtualHost != "nova/cell1" || len(u.Hosts) != 3 {
		t.Fatalf("transport url: %+v", u)
	}
	wantAddrs := []string{"10.0.0.1:5673", "[fd00::2]:5672", "10.0.0.3:5672"}
	for i, h := range c.BrokerHosts() {
		if h.Addr() != wantAddrs[i] || h.Password.Reveal() != "broker#secret" {
			t.Errorf("host %d: %s %q", i, h.Addr(), h.Password.Reveal())
		}
	}
	if u.Hosts[1].Password.Reveal() != "pw2" {
		t.Errorf("password_file must not change the parsed URL")
	}
	if !c.AMQP.ExchangeDurable || c.AMQP.ReconnectMax != time.Minute {
		t.Errorf("amqp: %+v", c.AMQP)
	}
	if !reflect.DeepEqual(c.ISCSI.Listen, []string{"127.0.0.1", "10.1.0.11"}) || c.ISCSI.CHAPSecretFile.Secret.Reveal() != "chapsecret1234" {
		t.Errorf("iscsi: %+v", c.ISCSI)
	}
	if !reflect.DeepEqual(c.Peers, map[string]string{"compute2": "10.1.0.12:3270", "compute3": "10.1.0.13"}) {
		t.Errorf("peers: %v", c.Peers)
	}
	if c.API.PSKFile.Secret.Reveal() != "pre-shared" || c.OpenStack.Cloud != "mycloud" {
		t.Errorf("api/openstack: %+v %+v", c.API, c.OpenStack)
	}
	if c.Replicator.Grain != 4096 || c.Replicator.Chunk != 1<<20 || c.Replicator.BandwidthLimit != 100<<20 || c.Replicator.SourceTimeout != 90*time.Second {
		t.Errorf("replicator: %+v", c.Replicator)
	}
}

func TestLoadFillsHostname(t *testing.T) {
	conf := writeFile(t, t.TempDir(), "c.conf", "[amqp]\ntransport_url = rabbit://h/\n")
	c, err := Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.Hostname()
	if c.Default.Host != want || c.QueueName() != "shareless."+want {
		t.Fatalf("host %q queue %q, want hostname %q", c.Default.Host, c.QueueName(), want)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	empty := writeFile(t, dir, "empty", "\n")
	const url = "[amqp]\ntransport_url = rabbit://h/\n"
	tests := []struct {
		name, conf string
		want       string // substring after "<file>: "
		unknown    bool
	}{
		{"syntax", "[amqp\n", "syntax: unclosed section: [amqp", false},
		{"unknown section", "[amqqp]\nqueue = x\n", "[amqqp]: unknown section", true},
		{"unknown option", "[amqp]\nqeueu = x\n", "[amqp] qeueu: unknown option", true},
		{"unknown DEFAULT option", "debug = true\n" + url, "[DEFAULT] debug: unknown option", true},
		{"bad int", url + "prefetch = many\n", `[amqp] prefetch: not an integer: "many"`, false},
		{"bad bool", url + "exchange_durable = maybe\n", `[amqp] exchange_durable: not a boolean`, false},
		{"bad duration", url + "heartbeat = 10 parsecs\n", `[amqp] heartbeat: not a duration`, false},
		{"bad level", "log_level = loud\n" + url, `[DEFAULT] log_level: not a log level`, false},
		{"bad size", url + "[replicator]\nchunk = 4MB\n", `[replicator] chunk: not a size`, false},
		{"bad url scheme", "[amqp]\ntransport_url = amqp://h/\n", "[amqp] transport_url: must start with rabbit://", false},
		{"bad url port", "[amqp]\ntransport_url = rabbit://h:99999/\n", "[amqp] transport_url: bad port", false},
		{"missing url", "[DEFAULT]\nhost = x\n", "[amqp] transport_url: required", false},
		{"missing secret file", url + "[iscsi]\nchap_secret_file = /nonexistent/chap\n", "[iscsi] chap_secret_file: open /nonexistent/chap", false},
		{"empty secret file", url + "[api]\npsk_file = " + empty + "\n", "[api] psk_file: " + empty + " is empty", false},
		{"psk needed", url + "[api]\nlisten = 10.1.0.11:3270\n", "[api] psk_file: required when listen", false},
		{"grain", url + "[replicator]\ngrain = 1000\n", "[replicator] grain: must be a power of two", false},
		{"chunk", url + "[replicator]\nchunk = 40KiB\n", "[replicator] chunk: must be a multiple of grain", false},
		{"method", url + "[replicator]\nmethod = lazy\n", "[replicator] method: must be copy or remote", false},
		{"cloud and auth_url", url + "[openstack]\ncloud = a\nauth_url = http://k/v3\n", "[openstack] auth_url: set either cloud or auth_url", false},
		{"auth_url without user", url + "[openstack]\nauth_url = http://k/v3\n", "[openstack] username: required with auth_url", false},
		{"auth_url without password", url + "[openstack]\nauth_url = http://k/v3\nusername = shareless\n", "[openstack] password_file: required with auth_url", false},
		{"empty peer", url + "[peers]\ncompute2 =\n", "[peers] compute2: empty value", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, dir, strings.ReplaceAll(tt.name, " ", "_")+".conf", "host = h\n"+tt.conf)
			if strings.HasPrefix(tt.conf, "debug") || strings.HasPrefix(tt.conf, "log_level") {
				p = writeFile(t, dir, strings.ReplaceAll(tt.name, " ", "_")+".conf", tt.conf)
			}
			_, err := Load(p)
			if err == nil {
				t.Fatal("no error")
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != p {
				t.Fatalf("error %v is not a *config.Error naming %s", err, p)
			}
			if !strings.HasPrefix(err.Error(), p+": "+tt.want) {
				t.Fatalf("error\n  %v\nwant prefix\n  %s: %s", err, p, tt.want)
			}
			if errors.Is(err, ErrUnknown) != tt.unknown {
				t.Fatalf("errors.Is(ErrUnknown) = %v", !tt.unknown)
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "absent.conf")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("absent file: %v", err)
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	chap := writeFile(t, dir, "chap", "s3cr3t-chap")
	conf := writeFile(t, dir, "c.conf", "host = h\n[amqp]\ntransport_url = rabbit://nova:s3cr3t-url@h:5672/\n[iscsi]\nchap_secret_file = "+chap+"\n")
	c, err := Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x"} {
		fmt.Fprintf(&out, verb+"\n", c)
		fmt.Fprintf(&out, verb+"\n", c.ISCSI.CHAPSecretFile.Secret)
	}
	fmt.Fprintln(&out, c.AMQP.TransportURL)
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	for _, h := range []slog.Handler{slog.NewJSONHandler(&out, nil), slog.NewTextHandler(&out, nil)} {
		slog.New(h).Info("cfg", "secret", c.ISCSI.CHAPSecretFile.Secret, "url", c.AMQP.TransportURL, "iscsi", c.ISCSI)
	}
	for _, s := range []string{"s3cr3t-chap", "s3cr3t-url"} {
		if strings.Contains(out.String(), s) {
			t.Fatalf("secret %q printed:\n%s", s, out.String())
		}
	}
	if !strings.Contains(out.String(), "rabbit://nova:"+secret.Redacted+"@h:5672/") {
		t.Fatalf("transport url not printed usefully:\n%s", out.String())
	}
	if c.ISCSI.CHAPSecretFile.Secret.Reveal() != "s3cr3t-chap" {
		t.Fatal("Reveal lost the secret")
	}
}

func TestSizeString(t *testing.T) {
	for _, tt := range []struct {
		z    Size
		want string
	}{{0, "0"}, {512, "512"}, {64 << 10, "64KiB"}, {3 << 30, "3GiB"}, {1<<20 + 1, "1048577"}} {
		if got := tt.z.String(); got != tt.want {
			t.Errorf("%d: %q, want %q", int64(tt.z), got, tt.want)
		}
		if back, err := parseSize(tt.want); err != nil || back != tt.z {
			t.Errorf("parseSize(%q) = %v, %v", tt.want, back, err)
		}
	}
}
