package novahook

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of novahook/testdata/machine/*.txt")

// TestMachineScripts replays the scripts under testdata/machine. Each block
// is a command, a line "----" and the expected output; -rewrite fills in the
// output (review the diff before committing it).
func TestMachineScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/machine/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

type scriptBlock struct {
	comments []string
	cmd      string
	line     int
	want     []string
}

func readScript(t *testing.T, path string) []scriptBlock {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []scriptBlock
	var cur scriptBlock
	sc := bufio.NewScanner(f)
	n := 0
	state := 0 // 0: before a command, 1: want "----", 2: output
	for sc.Scan() {
		n++
		line := sc.Text()
		switch state {
		case 0:
			if line == "" || strings.HasPrefix(line, "#") {
				cur.comments = append(cur.comments, line)
				continue
			}
			cur.cmd, cur.line, state = line, n, 1
		case 1:
			if line != "----" {
				t.Fatalf("%s:%d: want ----, got %q", path, n, line)
			}
			state = 2
		case 2:
			if line == "" {
				blocks = append(blocks, cur)
				cur, state = scriptBlock{}, 0
				continue
			}
			cur.want = append(cur.want, line)
		}
	}
	if state == 1 {
		t.Fatalf("%s: command at line %d has no ----", path, cur.line)
	}
	if state == 2 {
		blocks = append(blocks, cur)
	}
	return blocks
}

func runScript(t *testing.T, path string) {
	blocks := readScript(t, path)
	h := &harness{t: t, now: time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC)}
	var out strings.Builder
	failed := false
	for _, b := range blocks {
		got := h.run(b.cmd)
		if len(got) == 0 {
			got = []string{"(nothing)"}
		}
		if strings.Join(got, "\n") != strings.Join(b.want, "\n") && !*rewrite {
			t.Errorf("%s:%d: %s\ngot:\n  %s\nwant:\n  %s", path, b.line, b.cmd, strings.Join(got, "\n  "), strings.Join(b.want, "\n  "))
			failed = true
		}
		for _, c := range b.comments {
			out.WriteString(c + "\n")
		}
		out.WriteString(b.cmd + "\n----\n" + strings.Join(got, "\n") + "\n\n")
	}
	if *rewrite && !failed {
		if err := os.WriteFile(path, []byte(strings.TrimSuffix(out.String(), "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type harness struct {
	t      *testing.T
	m      *Machine
	host   string
	now    time.Time
	nextID int
}

func (h *harness) run(cmd string) []string {
	fields := strings.Fields(cmd)
	args := map[string]string{}
	var pos []string
	for _, f := range fields[1:] {
		if k, v, ok := strings.Cut(f, "="); ok {
			args[k] = v
		} else {
			pos = append(pos, f)
		}
	}
	vm := args["vm"]
	if vm == "" {
		vm = "vm1"
	}
	switch fields[0] {
	case "host":
		h.host = pos[0]
		h.m = NewMachine(DefaultMachineConfig(h.host), NewState())
		return []string{"ok"}
	case "notify":
		// Nova's events are some time apart; their timestamps must differ.
		h.now = h.now.Add(100 * time.Millisecond)
		return h.step(h.notification(pos[0], vm, args))
	case "hook":
		op := map[string]HookOp{"begin": HookMigrateBegin, "released": HookReleased}[pos[0]]
		wait := h.duration(args["wait"], time.Minute)
		id, _ := strconv.ParseUint(args["id"], 10, 64)
		return h.step(HookCall{ID: id, Op: op, Instance: vm, Deadline: h.now.Add(wait)})
	case "replica":
		kind := map[string]ReplicaKind{"prepared": ReplicaPrepared, "failed": ReplicaPrepareFailed, "progress": ReplicaProgress, "copied": ReplicaCopied}[pos[0]]
		role := RoleDestination
		if args["role"] == "source" {
			role = RoleSource
		}
		done, _ := strconv.ParseInt(args["done"], 10, 64)
		total, _ := strconv.ParseInt(args["total"], 10, 64)
		return h.step(ReplicaUpdate{Instance: vm, Role: role, Kind: kind, Done: done, Total: total, Err: args["err"]})
	case "tick":
		if len(pos) > 0 {
			h.now = h.now.Add(h.duration(pos[0], 0))
		}
		return h.step(Tick{})
	case "restart":
		h.m = NewMachine(DefaultMachineConfig(h.host), h.reload())
		return h.step(Restart{})
	case "status":
		var out []string
		for _, r := range h.m.Migrations() {
			out = append(out, fmtMigration(&r))
		}
		return out
	case "sourceof":
		var out []string
		for _, r := range h.m.SourceOf() {
			out = append(out, fmtMigration(&r))
		}
		return out
	}
	h.t.Fatalf("unknown command %q", cmd)
	return nil
}

// reload rebuilds the state the way the journal does: from its encoded ops.
func (h *harness) reload() *State {
	b, err := json.Marshal(h.m.state.Snapshot())
	if err != nil {
		h.t.Fatal(err)
	}
	var ops []Op
	if err := json.Unmarshal(b, &ops); err != nil {
		h.t.Fatal(err)
	}
	s := NewState()
	s.Apply(ops)
	return s
}

func (h *harness) duration(s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(strings.TrimPrefix(s, "+"))
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

// notification builds event (like pre.start or rollback_dest.end) from
// Nova's sample, sends it through the wire encoding and Parse. The samples'
// hosts are "compute" (source) and "host2" (destination); from= and host=
// override publisher host and payload.host, ts= shifts Nova's timestamp.
func (h *harness) notification(event, vm string, args map[string]string) Notification {
	file := "instance-live_migration_" + strings.Replace(event, ".", "-", 1)
	id := args["id"]
	if id == "" {
		h.nextID++
		id = fmt.Sprintf("m%d", h.nextID)
	}
	ts := h.now.Add(h.duration(args["ts"], 0))
	msg := sample(h.t, file, func(m map[string]any) {
		m["message_id"] = id
		m["timestamp"] = ts.Format("2006-01-02 15:04:05.999999")
		if from := args["from"]; from != "" {
			m["publisher_id"] = "nova-compute:" + from
		}
		data := payloadData(m)
		data["uuid"] = vm
		if host := args["host"]; host != "" {
			data["host"] = host
		}
	})
	n, err := Parse(wireV2(h.t, msg))
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

func (h *harness) step(ev Event) []string {
	rd := h.m.Step(h.now, ev)
	var out []string
	if rd.Duplicate {
		out = append(out, "duplicate")
	}
	for _, op := range rd.Persist {
		switch {
		case op.Put != nil:
			out = append(out, "persist put "+fmtMigration(op.Put))
		case op.Remove != nil:
			out = append(out, "persist remove "+op.Remove.String())
		case op.See != "":
			out = append(out, "persist see "+op.See)
		case op.Forget != "":
			out = append(out, "persist forget "+op.Forget)
		}
	}
	for _, a := range rd.Actions {
		out = append(out, "action "+strings.TrimPrefix(fmt.Sprintf("%T %+v", a, a), "novahook."))
	}
	for _, n := range rd.Notes {
		out = append(out, "note "+n)
	}
	return out
}

func fmtMigration(m *Migration) string {
	s := fmt.Sprintf("%s %s>%s %s", m.Key(), m.Source, m.Dest, m.Phase)
	if m.Home {
		s += " home"
	}
	if m.AbortRequested {
		s += " abort-requested"
	}
	if m.Error != "" {
		s += fmt.Sprintf(" error=%q", m.Error)
	}
	if m.Total > 0 {
		s += fmt.Sprintf(" copied=%d/%d", m.Done, m.Total)
	}
	return s
}

// interleavings returns every merge of a and b that keeps the order within
// each: RabbitMQ keeps one publisher's messages in order, not two publishers'.
func interleavings(a, b []string) [][]string {
	if len(a) == 0 || len(b) == 0 {
		return [][]string{append(append([]string(nil), a...), b...)}
	}
	var out [][]string
	for _, rest := range interleavings(a[1:], b) {
		out = append(out, append([]string{a[0]}, rest...))
	}
	for _, rest := range interleavings(a, b[1:]) {
		out = append(out, append([]string{b[0]}, rest...))
	}
	return out
}

// TestMachineAnyDeliveryOrder replays Nova's live-migration samples, success
// and rollback, in every order a broker may deliver them (each host's own
// events in order, the two hosts' interleaved arbitrarily), every message
// delivered twice, on both hosts. Each action must happen exactly once and
// the migration must end in the same phase.
func TestMachineAnyDeliveryOrder(t *testing.T) {
	type want struct {
		phase   Phase
		home    bool
		actions map[string]int
	}
	flows := []struct {
		name         string
		dest, source []string // the samples each host sends, in Nova's order
		want         map[string]want
	}{
		{
			name:   "success",
			dest:   []string{"pre-start", "pre-end", "post_dest-start", "post_dest-end"},
			source: []string{"post-start", "post-end"},
			want: map[string]want{
				"host2":   {PhaseCopying, true, map[string]int{"PrepareReplicas": 1, "StartCopy": 1, "RecordHome": 1}},
				"compute": {PhaseCopying, false, map[string]int{"SealExports": 1}},
			},
		},
		{
			name:   "rollback",
			dest:   []string{"pre-start", "pre-end", "rollback_dest-start", "rollback_dest-end"},
			source: []string{"rollback-start", "rollback-end"},
			want: map[string]want{
				"host2":   {PhaseRolledBack, false, map[string]int{"PrepareReplicas": 1, "DiscardReplicas": 1}},
				"compute": {PhaseRolledBack, false, map[string]int{"UnsealExports": 1}},
			},
		},
		{
			name:   "abort",
			dest:   []string{"pre-start", "pre-end"},
			source: []string{"abort-start", "abort-end", "rollback-start", "rollback-end"},
			want: map[string]want{
				"host2":   {PhaseRolledBack, false, map[string]int{"PrepareReplicas": 1, "DiscardReplicas": 1}},
				"compute": {PhaseRolledBack, false, map[string]int{"UnsealExports": 1}},
			},
		},
	}
	t0 := time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC)
	for _, flow := range flows {
		// Nova's timestamps follow its real order: dest's pre.*, then the
		// source's events, the dest's post_dest.* in between post.start and post.end.
		stamps := map[string]time.Time{}
		real := []string{"pre-start", "pre-end", "abort-start", "abort-end", "post-start", "post_dest-start", "post_dest-end", "post-end",
			"rollback-start", "rollback_dest-start", "rollback_dest-end", "rollback-end"}
		for i, s := range real {
			stamps[s] = t0.Add(time.Duration(i) * time.Second)
		}
		msgs := map[string]Notification{}
		for _, s := range append(append([]string(nil), flow.dest...), flow.source...) {
			msg := sample(t, "instance-live_migration_"+s, func(m map[string]any) {
				m["message_id"] = s
				m["timestamp"] = stamps[s].Format("2006-01-02 15:04:05.999999")
			})
			n, err := Parse(wireV2(t, msg))
			if err != nil {
				t.Fatal(err)
			}
			msgs[s] = n
		}
		orders := interleavings(flow.dest, flow.source)
		for host, w := range flow.want {
			for _, order := range orders {
				m := NewMachine(DefaultMachineConfig(host), NewState())
				got := map[string]int{}
				lastReplicaAction := ""
				now := t0
				var step func(ev Event)
				step = func(ev Event) {
					now = now.Add(time.Second)
					for _, a := range m.Step(now, ev).Actions {
						name := strings.TrimPrefix(fmt.Sprintf("%T", a), "novahook.")
						got[name]++
						if name == "PrepareReplicas" || name == "DiscardReplicas" {
							lastReplicaAction = name
						}
						if p, ok := a.(PrepareReplicas); ok {
							// The replicator answers at once.
							step(ReplicaUpdate{Instance: p.Instance, Role: RoleDestination, Kind: ReplicaPrepared})
						}
					}
				}
				for _, s := range order {
					step(msgs[s])
					step(msgs[s]) // redelivered
				}
				ms := m.Migrations()
				if len(ms) != 1 {
					t.Fatalf("%s on %s, order %v: %d records", flow.name, host, order, len(ms))
				}
				r := ms[0]
				// Replicas prepared after an early rollback are discarded
				// once more: DiscardReplicas is idempotent and may repeat,
				// but nothing may be prepared after the last discard.
				if n := got["DiscardReplicas"]; n > 1 && w.actions["DiscardReplicas"] == 1 && lastReplicaAction == "DiscardReplicas" {
					got["DiscardReplicas"] = 1
				}
				if r.Phase != w.phase || r.Home != w.home || r.Source != "compute" || r.Dest != "host2" || fmt.Sprint(got) != fmt.Sprint(w.actions) {
					t.Fatalf("%s on %s, order %v:\n got %s actions %v\nwant %v home=%v actions %v", flow.name, host, order, fmtMigration(&r), got, w.phase, w.home, w.actions)
				}
			}
		}
		t.Logf("%s: %d delivery orders on each host", flow.name, len(orders))
	}
}
