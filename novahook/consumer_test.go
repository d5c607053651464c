package novahook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/shareless/shareless/config"
	"github.com/shareless/shareless/internal/novaemit"
	"github.com/shareless/shareless/internal/rabbit"
	"github.com/shareless/shareless/internal/testenv"
)

// One broker for the package: it takes seconds to start. It is started by
// the first test that needs it and stopped by TestMain.
var shared struct {
	once   sync.Once
	dir    string
	server *rabbit.Server
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.server != nil {
		shared.server.Close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func needBroker(t *testing.T) *rabbit.Server {
	t.Helper()
	testenv.SkipIfShort(t)
	testenv.NeedCommands(t, rabbit.Commands()...)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "novahook-rabbit-")
		if shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.server, shared.err = rabbit.Start(ctx, shared.dir)
	})
	if errors.Is(shared.err, rabbit.ErrNotInstalled) && !testenv.Strict() {
		t.Skip(shared.err)
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.server
}

func lm(event, uuid string) novaemit.Line {
	return novaemit.Line{Sample: filepath.Join(samplesDir, "resolved", "instance-live_migration_"+event+".json"), UUID: uuid}
}

// emit sends plan through oslo.messaging with driver (messagingv2 or messaging).
func emit(t *testing.T, s *rabbit.Server, driver string, plan []novaemit.Line) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := novaemit.Emit(ctx, s.TransportURL(), driver, plan); err != nil {
		t.Fatal(err)
	}
}

// publishRaw puts body on Nova's exchange as if Nova had sent it.
func publishRaw(t *testing.T, s *rabbit.Server, key string, bodies ...[]byte) {
	t.Helper()
	conn, err := amqp.Dial(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bodies {
		if err := ch.PublishWithContext(context.Background(), "nova", key, false, false,
			amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: b}); err != nil {
			t.Fatal(err)
		}
	}
}

// amqpChannel opens a channel for test inspection, closed at cleanup.
func amqpChannel(t *testing.T, s *rabbit.Server) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// consumerConfig is the agent's default config for host, on the test broker.
func consumerConfig(t *testing.T, s *rabbit.Server, host string) ConsumerConfig {
	t.Helper()
	c := config.Defaults()
	c.Default.Host = host
	c.AMQP.Queue = fmt.Sprintf("shareless.%s.%s", host, t.Name())
	c.AMQP.ReconnectMin = 200 * time.Millisecond
	c.AMQP.ReconnectMax = 2 * time.Second
	var err error
	if c.AMQP.TransportURL, err = parseTestURL(s.TransportURL()); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate("test"); err != nil {
		t.Fatal(err)
	}
	cfg := ConsumerConfigFrom(&c)
	t.Cleanup(func() {
		ch := amqpChannel(t, s)
		ch.QueueDelete(cfg.Queue, false, false, false)
		ch.QueueDelete(cfg.SetAsideQueue, false, false, false)
	})
	return cfg
}

// parseTestURL parses a transport URL through the config package, as the agent does.
func parseTestURL(u string) (config.TransportURL, error) {
	c, err := config.Parse("test", []byte("[amqp]\ntransport_url = "+u+"\n"))
	return c.AMQP.TransportURL, err
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// recorder is an Executor that keeps the actions.
type recorder struct {
	mu      sync.Mutex
	actions []Action
}

func (r *recorder) Run(_ context.Context, a Action) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.actions = append(r.actions, a)
}

func (r *recorder) count() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := map[string]int{}
	for _, a := range r.actions {
		n[strings.TrimPrefix(fmt.Sprintf("%T", a), "novahook.")]++
	}
	return n
}

// counter wraps a Node and counts what each notification did.
type counter struct {
	node *Node
	mu   sync.Mutex
	// applied counts applications per (instance, event type): each must be 1.
	applied    map[string]int
	ids        map[string]int // applications per message_id
	duplicates int
	ignored    map[string]int // per event type
	delivered  int
	// gate, if set, is called before handling delivery number n (from 1).
	gate func(n int)
}

func newCounter(node *Node) *counter {
	return &counter{node: node, applied: map[string]int{}, ids: map[string]int{}, ignored: map[string]int{}}
}

func (c *counter) HandleNotification(ctx context.Context, n Notification) (Outcome, error) {
	c.mu.Lock()
	c.delivered++
	k, gate := c.delivered, c.gate
	c.mu.Unlock()
	if gate != nil {
		gate(k)
	}
	o, err := c.node.HandleNotification(ctx, n)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch o {
	case Applied:
		c.applied[n.Payload.InstanceUUID+" "+n.EventType]++
		c.ids[n.MessageID]++
	case Duplicate:
		c.duplicates++
	case Ignored:
		c.ignored[n.EventType]++
	}
	return o, err
}

func (c *counter) appliedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.applied)
}

func newNode(t *testing.T, host string, exec Executor) *Node {
	t.Helper()
	j, st, err := OpenJournal(OSFS{}, t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	n := NewNode(DefaultMachineConfig(host), j, st, exec, time.Now, testLogger(t))
	if err := n.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

// runConsumer runs a consumer until the test ends and waits until the
// broker shows it consuming. The returned channel yields Run's result.
func runConsumer(t *testing.T, s *rabbit.Server, cfg ConsumerConfig, h Handler) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		done <- NewConsumer(cfg, h, testLogger(t)).Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Error("consumer did not stop")
		}
	})
	waitConsuming(t, s, cfg.Queue)
	return done
}

func waitConsuming(t *testing.T, s *rabbit.Server, queue string) {
	t.Helper()
	waitFor(t, 30*time.Second, "consumer on "+queue, func() bool {
		conn, err := amqp.Dial(s.URL())
		if err != nil {
			return false
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return false
		}
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		return err == nil && q.Consumers > 0
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConsumerExchangeAsOsloDeclaresIt declares Nova's exchange from both
// sides in both orders: if the agent's declaration differed from
// oslo.messaging's in any property, the broker would refuse the second one.
func TestConsumerExchangeAsOsloDeclaresIt(t *testing.T) {
	s := needBroker(t)
	novaemit.Need(t)
	ch := amqpChannel(t, s)
	// oslo first: the exchange does not exist until Nova's notifier sends.
	if err := ch.ExchangeDelete("nova", false, false); err != nil {
		t.Fatal(err)
	}
	emit(t, s, "messagingv2", []novaemit.Line{lm("pre-start", "exchange-oslo-first")})
	cfg := consumerConfig(t, s, "host2")
	rec := &recorder{}
	runConsumer(t, s, cfg, newCounter(newNode(t, "host2", rec)))

	// The agent first: a notifier started later must accept the exchange.
	ch2 := amqpChannel(t, s)
	if err := ch2.ExchangeDelete("nova", false, false); err != nil {
		t.Fatal(err)
	}
	if err := ch2.ExchangeDeclare("nova", amqp.ExchangeTopic, cfg.ExchangeDurable, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	// oslo logs and drops a notification it cannot send, so check that it
	// arrived rather than that the notifier succeeded.
	probe, err := ch2.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch2.QueueBind(probe.Name, "versioned_notifications.info", "nova", false, nil); err != nil {
		t.Fatal(err)
	}
	emit(t, s, "messagingv2", []novaemit.Line{lm("pre-start", "exchange-agent-first")})
	waitFor(t, 10*time.Second, "oslo's notification on the agent's exchange", func() bool {
		q, err := ch2.QueueDeclarePassive(probe.Name, false, true, true, false, nil)
		return err == nil && q.Messages == 1
	})

	// The check can fail: a durable declaration conflicts with oslo's.
	err = ch2.ExchangeDeclare("nova", amqp.ExchangeTopic, true, false, false, false, nil)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		t.Fatalf("durable redeclaration: %v, want PRECONDITION_FAILED", err)
	}
}

// malformed are bodies that are not Nova notifications, for the set-aside path.
func malformed(t *testing.T) map[string][]byte {
	good := wireV2(t, sample(t, "instance-live_migration_pre-start", nil))
	return map[string][]byte{
		"not json":        []byte("this is not json"),
		"truncated":       good[:len(good)/3],
		"unknown version": []byte(`{"oslo.version": "3.0", "oslo.message": "{}"}`),
		"inner not json":  []byte(`{"oslo.version": "2.0", "oslo.message": "{\"message_id\": "}`),
		"empty":           {},
		"legacy payload":  wireV1(t, sample(t, "instance-live_migration_pre-start", func(m map[string]any) { m["payload"] = map[string]any{"x": 1} })),
	}
}

// TestConsumerReplaysNova sends every live-migration sample through
// oslo.messaging in Nova's real order (success, rollback, abort), in both
// wire formats, with INFO and ERROR events and malformed messages between
// them, and checks the states the agent reaches and what it set aside.
func TestConsumerReplaysNova(t *testing.T) {
	s := needBroker(t)
	novaemit.Need(t)
	cfg := consumerConfig(t, s, "host2")
	rec := &recorder{}
	node := newNode(t, "host2", rec)
	cnt := newCounter(node)
	runConsumer(t, s, cfg, cnt)

	success := func(uuid string) []novaemit.Line {
		var p []novaemit.Line
		for _, e := range []string{"pre-start", "pre-end", "post-start", "post_dest-start", "post_dest-end", "post-end"} {
			p = append(p, lm(e, uuid))
		}
		return p
	}
	rollback := func(uuid string) []novaemit.Line {
		var p []novaemit.Line
		for _, e := range []string{"pre-start", "pre-end", "rollback-start", "rollback_dest-start", "rollback-end", "rollback_dest-end"} {
			p = append(p, lm(e, uuid))
		}
		return p
	}
	abort := func(uuid string) []novaemit.Line {
		var p []novaemit.Line
		for _, e := range []string{"pre-start", "pre-end", "abort-start", "abort-end", "rollback-start", "rollback-end"} {
			p = append(p, lm(e, uuid))
		}
		return p
	}
	others := []novaemit.Line{
		{Sample: filepath.Join(samplesDir, "resolved", "instance-volume_attach-error.json")},
		{Sample: filepath.Join(samplesDir, "resolved", "compute_task-migrate_server-error.json")},
		lm("force_complete-start", "v2-success"), lm("force_complete-end", "v2-success"),
	}
	bad := malformed(t)
	var badBodies [][]byte
	for _, b := range bad {
		badBodies = append(badBodies, b)
	}
	half := len(badBodies) / 2

	publishRaw(t, s, "versioned_notifications.info", badBodies[:half]...)
	v2 := append(append(append(success("v2-success"), rollback("v2-rollback")...), abort("v2-abort")...), others...)
	emit(t, s, "messagingv2", v2)
	publishRaw(t, s, "versioned_notifications.error", badBodies[half:]...)
	v1 := append(append(success("v1-success"), rollback("v1-rollback")...), abort("v1-abort")...)
	emit(t, s, "messaging", v1)

	wantApplied := 3*6*2 + 2 // three flows, two formats, plus force_complete
	waitFor(t, 60*time.Second, "every notification applied", func() bool { return cnt.appliedCount() == wantApplied })
	ch := amqpChannel(t, s)
	waitFor(t, 30*time.Second, "set-aside messages", func() bool {
		q, err := ch.QueueDeclarePassive(cfg.SetAsideQueue, true, false, false, false, nil)
		return err == nil && q.Messages == len(bad)
	})

	got := map[string]string{}
	for _, m := range node.Migrations() {
		got[m.Instance] = fmt.Sprintf("%s %s>%s %s home=%v", m.Role, m.Source, m.Dest, m.Phase, m.Home)
	}
	want := map[string]string{}
	for _, f := range []string{"v1", "v2"} {
		want[f+"-success"] = "dest compute>host2 copying home=true"
		want[f+"-rollback"] = "dest compute>host2 rolled-back home=false"
		want[f+"-abort"] = "dest compute>host2 rolled-back home=false"
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("states\n got %v\nwant %v", got, want)
	}
	if n := rec.count(); fmt.Sprint(n) != fmt.Sprint(map[string]int{"DiscardReplicas": 4, "PrepareReplicas": 6, "RecordHome": 2, "StartCopy": 2}) {
		t.Fatalf("actions %v", n)
	}
	cnt.mu.Lock()
	if cnt.ignored["instance.volume_attach.error"] != 1 || cnt.ignored["compute_task.migrate_server.error"] != 1 {
		t.Errorf("ERROR-priority events not received: %v", cnt.ignored)
	}
	cnt.mu.Unlock()

	// Each set-aside message is the original body, with the reason.
	seen := map[string]bool{}
	for range bad {
		d, ok, err := ch.Get(cfg.SetAsideQueue, true)
		if err != nil || !ok {
			t.Fatalf("get set-aside: %v %v", ok, err)
		}
		reason, _ := d.Headers[HeaderError].(string)
		if !strings.HasPrefix(reason, "nova notification: ") || d.Headers[HeaderExchange] != "nova" {
			t.Errorf("set-aside headers %v", d.Headers)
		}
		for name, b := range bad {
			if bytes.Equal(b, d.Body) {
				seen[name] = true
			}
		}
	}
	if len(seen) != len(bad) {
		t.Fatalf("set aside %v, want all of %d", seen, len(bad))
	}
}

// TestConsumerBrokerRestart restarts the broker while 1,000 notifications
// are queued and one is being handled: none may be lost and none applied
// twice, so the one whose acknowledgement died with the connection must
// come back as a duplicate.
func TestConsumerBrokerRestart(t *testing.T) {
	s := needBroker(t)
	novaemit.Need(t)
	cfg := consumerConfig(t, s, "host2")
	rec := &recorder{}
	node := newNode(t, "host2", rec)
	cnt := newCounter(node)
	gateHit := make(chan struct{})
	release := make(chan struct{})
	cnt.gate = func(n int) {
		if n == 300 {
			close(gateHit)
			<-release
		}
	}
	runConsumer(t, s, cfg, cnt)

	const instances = 250
	var plan []novaemit.Line
	for i := range instances {
		uuid := fmt.Sprintf("restart-%04d", i)
		post := lm("post-start", uuid)
		postDestEnd := lm("post_dest-end", uuid)
		plan = append(plan, lm("pre-start", uuid), lm("pre-end", uuid), post, postDestEnd)
	}
	start := time.Now()
	emit(t, s, "messagingv2", plan)
	t.Logf("oslo.messaging sent %d notifications in %v", len(plan), time.Since(start))
	select {
	case <-gateHit:
	case <-time.After(60 * time.Second):
		t.Fatal("the 300th delivery never came")
	}
	restartStart := time.Now()
	if err := s.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker restarted in %v", time.Since(restartStart))
	close(release)

	waitFor(t, 90*time.Second, "1000 notifications applied", func() bool { return cnt.appliedCount() == len(plan) })
	// Let any late redelivery arrive before counting.
	waitConsuming(t, s, cfg.Queue)
	ch := amqpChannel(t, s)
	waitFor(t, 30*time.Second, "queue drained", func() bool {
		q, err := ch.QueueDeclarePassive(cfg.Queue, true, false, false, false, nil)
		return err == nil && q.Messages == 0
	})
	cnt.mu.Lock()
	defer cnt.mu.Unlock()
	for k, n := range cnt.applied {
		if n != 1 {
			t.Errorf("%s applied %d times", k, n)
		}
	}
	for id, n := range cnt.ids {
		if n != 1 {
			t.Errorf("message %s applied %d times", id, n)
		}
	}
	if len(cnt.ids) != len(plan) {
		t.Errorf("%d message_ids applied, want %d", len(cnt.ids), len(plan))
	}
	if cnt.duplicates < 1 {
		t.Errorf("no redelivery was recognised as a duplicate; the restart did not interrupt an unacknowledged message")
	}
	t.Logf("delivered %d, applied %d, duplicates %d", cnt.delivered, len(cnt.ids), cnt.duplicates)
	if n := rec.count(); n["PrepareReplicas"] != instances || n["StartCopy"] != instances || n["RecordHome"] != instances || len(n) != 3 {
		t.Errorf("actions %v", n)
	}
	for _, m := range node.Migrations() {
		if m.Phase != PhaseCopying || !m.Home || m.Source != "compute" {
			t.Errorf("%s: %s home=%v", m.Instance, m.Phase, m.Home)
		}
	}
}

// failing is a handler whose storage is broken.
type failing struct{ calls chan Notification }

func (f failing) HandleNotification(_ context.Context, n Notification) (Outcome, error) {
	f.calls <- n
	return 0, errors.New("disk on fire")
}

// TestConsumerHandlerErrorIsFatal: when state cannot be persisted the
// consumer stops without acknowledging, and the message stays queued.
func TestConsumerHandlerErrorIsFatal(t *testing.T) {
	s := needBroker(t)
	cfg := consumerConfig(t, s, "host2")
	calls := make(chan Notification, 10)
	done := runConsumer(t, s, cfg, failing{calls})
	body := wireV2(t, sample(t, "instance-live_migration_pre-start", nil))
	publishRaw(t, s, "versioned_notifications.info", body)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("consumer kept running after the handler failed")
	}
	if len(calls) != 1 {
		t.Fatalf("handler called %d times", len(calls))
	}
	ch := amqpChannel(t, s)
	waitFor(t, 10*time.Second, "message back in the queue", func() bool {
		q, err := ch.QueueDeclarePassive(cfg.Queue, true, false, false, false, nil)
		return err == nil && q.Messages == 1
	})
}

// crashAfter persists through the node, then fails before the consumer
// can acknowledge: the agent dying between its journal write and its ack.
type crashAfter struct {
	node    *Node
	crashAt int
	seen    int
}

func (c *crashAfter) HandleNotification(ctx context.Context, n Notification) (Outcome, error) {
	o, err := c.node.HandleNotification(ctx, n)
	c.seen++
	if err == nil && c.seen == c.crashAt {
		return o, errors.New("simulated crash after the journal write")
	}
	return o, err
}

// TestConsumerAgentRestart: the agent dies after persisting a notification
// and before acknowledging it; the next agent, started from the same
// journal, gets the message again and recognises it by message_id.
func TestConsumerAgentRestart(t *testing.T) {
	s := needBroker(t)
	novaemit.Need(t)
	cfg := consumerConfig(t, s, "host2")
	stateDir := t.TempDir()
	openNode := func(rec *recorder) (*Node, *Journal) {
		j, st, err := OpenJournal(OSFS{}, stateDir, 0)
		if err != nil {
			t.Fatal(err)
		}
		n := NewNode(DefaultMachineConfig("host2"), j, st, rec, time.Now, testLogger(t))
		if err := n.Restart(context.Background()); err != nil {
			t.Fatal(err)
		}
		return n, j
	}
	rec1 := &recorder{}
	node1, j1 := openNode(rec1)
	done := runConsumer(t, s, cfg, &crashAfter{node: node1, crashAt: 3})
	var plan []novaemit.Line
	for _, e := range []string{"pre-start", "pre-end", "post-start", "post_dest-start", "post_dest-end", "post-end"} {
		plan = append(plan, lm(e, "agent-restart"))
	}
	emit(t, s, "messagingv2", plan)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "simulated crash") {
			t.Fatalf("first agent: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("first agent did not stop")
	}
	j1.Close()

	rec2 := &recorder{}
	node2, j2 := openNode(rec2)
	defer j2.Close()
	// The restart repeats the step the first agent had begun: copying.
	if n := rec2.count(); fmt.Sprint(n) != "map[StartCopy:1]" {
		t.Fatalf("actions on restart %v", n)
	}
	cnt := newCounter(node2)
	runConsumer(t, s, cfg, cnt)
	waitFor(t, 30*time.Second, "the rest of the migration", func() bool { return cnt.appliedCount() == 3 })
	ch := amqpChannel(t, s)
	waitFor(t, 10*time.Second, "queue drained", func() bool {
		q, err := ch.QueueDeclarePassive(cfg.Queue, true, false, false, false, nil)
		return err == nil && q.Messages == 0
	})
	cnt.mu.Lock()
	defer cnt.mu.Unlock()
	if cnt.duplicates != 1 {
		t.Fatalf("post.start redelivered to the new agent: %d duplicates, want 1", cnt.duplicates)
	}
	ms := node2.Migrations()
	if len(ms) != 1 || ms[0].Phase != PhaseCopying || !ms[0].Home {
		t.Fatalf("final state %+v", ms)
	}
	if n := rec2.count(); n["StartCopy"] != 1 || n["RecordHome"] != 1 || n["PrepareReplicas"] != 0 {
		t.Fatalf("actions of the second agent %v", n)
	}
}
