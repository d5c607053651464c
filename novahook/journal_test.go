package novahook

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// testOps returns the i-th batch of a deterministic history.
func testOps(i int) []Op {
	at := time.Date(2026, 11, 26, 5, 0, i, 0, time.UTC)
	m := &Migration{Instance: fmt.Sprintf("vm%d", i%7), Role: RoleDestination, Source: "compute", Dest: "host2",
		Phase: Phase(1 + i%6), LastEvent: at, Updated: at, Started: at}
	ops := []Op{{See: fmt.Sprintf("msg-%d", i), SeenAt: at}, {Put: m}}
	if i%5 == 4 {
		k := Key{fmt.Sprintf("vm%d", (i+3)%7), RoleDestination}
		ops = append(ops, Op{Remove: &k}, Op{Forget: fmt.Sprintf("msg-%d", i-3)})
	}
	return ops
}

func stateAfter(n int) *State {
	s := NewState()
	for i := range n {
		s.Apply(testOps(i))
	}
	return s
}

func equalState(a, b *State) bool {
	return reflect.DeepEqual(a.Snapshot(), b.Snapshot())
}

func TestJournalReopen(t *testing.T) {
	dir := t.TempDir()
	j, s, err := OpenJournal(OSFS{}, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Migrations) != 0 || len(s.Seen) != 0 {
		t.Fatalf("new journal not empty: %+v", s)
	}
	for i := range 20 {
		if err := j.Append(testOps(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Append(nil); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j, s, err = OpenJournal(OSFS{}, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if !equalState(s, stateAfter(20)) {
		t.Fatalf("reopened state differs")
	}
	if _, ok := s.Seen["msg-19"]; !ok {
		t.Fatal("dedup set lost across reopen")
	}
}

// TestJournalTornTail cuts the file at every byte offset, as a crash in the
// middle of a write can, and also zero-fills the rest (a tail the file
// system extended but never wrote): the journal must reopen with exactly the
// records that were complete, and appending must work after it.
func TestJournalTornTail(t *testing.T) {
	src := newCrashFS()
	j, _, err := OpenJournal(src, "/j", 0)
	if err != nil {
		t.Fatal(err)
	}
	var ends []int64 // file size after each record
	for i := range 4 {
		if err := j.Append(testOps(i)); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, j.size)
	}
	full := src.names["/j/"+journalName].data
	for cut := 0; cut <= len(full); cut++ {
		complete := 0
		for complete < len(ends) && ends[complete] <= int64(cut) {
			complete++
		}
		for _, tail := range []string{"cut", "zero-filled"} {
			fs := newCrashFS()
			data := append([]byte(nil), full[:cut]...)
			if tail == "zero-filled" {
				data = append(data, make([]byte, len(full)-cut)...)
			}
			fs.names["/j/"+journalName] = &inode{data: data, synced: data}
			j, s, err := OpenJournal(fs, "/j", 0)
			if err != nil {
				t.Fatalf("cut at %d (%s): %v", cut, tail, err)
			}
			if !equalState(s, stateAfter(complete)) {
				t.Fatalf("cut at %d (%s): state is not that of the %d complete records", cut, tail, complete)
			}
			if err := j.Append(testOps(complete)); err != nil {
				t.Fatal(err)
			}
			_, s, err = OpenJournal(fs, "/j", 0)
			if err != nil || !equalState(s, stateAfter(complete+1)) {
				t.Fatalf("cut at %d (%s): append after recovery lost: %v", cut, tail, err)
			}
		}
	}
}

// TestJournalCrashAfterEveryOperation runs appends with compactions and
// cuts the power after each file system operation in turn. Whatever a
// reboot finds (synced or unsynced directory entries and contents), the
// journal must open with every acknowledged append, plus at most the one
// in progress, and accept appends again.
func TestJournalCrashAfterEveryOperation(t *testing.T) {
	const appends, compactSize = 30, 1500
	run := func(fs *crashFS) (acked int) {
		j, _, err := OpenJournal(fs, "/j", compactSize)
		if err != nil {
			return 0
		}
		for i := range appends {
			if err := j.Append(testOps(i)); err != nil {
				return i
			}
		}
		return appends
	}
	clean := newCrashFS()
	if run(clean) != appends {
		t.Fatal("uncrashed run failed")
	}
	total := clean.ops
	// Each append is a write and a sync; the rest is creation and compaction.
	if total < 2*appends+2+5 {
		t.Fatalf("only %d operations; did compaction run?", total)
	}
	for crashAt := 1; crashAt <= total; crashAt++ {
		fs := newCrashFS()
		fs.crashAt = crashAt
		acked := run(fs)
		for _, v := range []struct{ durableNames, syncedData bool }{{true, true}, {true, false}, {false, true}, {false, false}} {
			rebooted := fs.after(v.durableNames, v.syncedData)
			j, s, err := OpenJournal(rebooted, "/j", compactSize)
			if err != nil {
				t.Fatalf("crash after op %d %+v: %v", crashAt, v, err)
			}
			if !equalState(s, stateAfter(acked)) && !equalState(s, stateAfter(acked+1)) {
				t.Fatalf("crash after op %d %+v: %d appends acknowledged, state is neither after %d nor %d", crashAt, v, acked, acked, acked+1)
			}
			if err := j.Append(testOps(99)); err != nil {
				t.Fatalf("crash after op %d %+v: append after reboot: %v", crashAt, v, err)
			}
		}
	}
	t.Logf("crashed after each of %d operations", total)
}

func TestJournalCorruption(t *testing.T) {
	dir := t.TempDir()
	j, _, err := OpenJournal(OSFS{}, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := j.Append(testOps(i)); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	path := filepath.Join(dir, journalName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[headerSize+3] ^= 0x40 // inside the first record's payload
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenJournal(OSFS{}, dir, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt first record: %v, want ErrCorrupt", err)
	}
}

func TestJournalCompaction(t *testing.T) {
	dir := t.TempDir()
	j, _, err := OpenJournal(OSFS{}, dir, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := j.Append(testOps(i)); err != nil {
			t.Fatal(err)
		}
		rec, _ := encodeRecord(testOps(i))
		if limit := max(2048, 2*j.base) + int64(len(rec)); j.size > limit {
			t.Fatalf("journal grew to %d bytes, limit %d", j.size, limit)
		}
	}
	j.Close()
	fi, err := os.Stat(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	_, s, err := OpenJournal(OSFS{}, dir, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if !equalState(s, stateAfter(200)) {
		t.Fatal("state after compaction differs")
	}
	snap, _ := encodeRecord(s.Snapshot())
	if fi.Size() > 2*int64(len(snap))+512 {
		t.Fatalf("compacted journal is %d bytes, snapshot %d", fi.Size(), len(snap))
	}
	// An interrupted compaction leaves journal.tmp; the journal still wins.
	if err := os.WriteFile(filepath.Join(dir, journalTmp), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, s, err = OpenJournal(OSFS{}, dir, 2048)
	if err != nil || !equalState(s, stateAfter(200)) {
		t.Fatalf("with a leftover temporary file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, journalTmp)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover temporary file not removed: %v", err)
	}
}

// TestJournalDrivesMachine runs a migration through a machine whose ops go
// to a journal, restarts from the journal, and checks the redelivered
// message is a duplicate and the restart repeats the copy.
func TestJournalDrivesMachine(t *testing.T) {
	dir := t.TempDir()
	j, s, err := OpenJournal(OSFS{}, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMachine(DefaultMachineConfig("host2"), s)
	now := time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC)
	pre := sample(t, "instance-live_migration_pre-start", func(m map[string]any) { m["message_id"] = "pre" })
	post := sample(t, "instance-live_migration_post-start", func(m map[string]any) {
		m["message_id"] = "post"
		m["timestamp"] = "2026-11-26 05:20:12"
	})
	var evs []Event
	for _, msg := range []map[string]any{pre, post} {
		n, err := Parse(wireV2(t, msg))
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, n)
	}
	evs = []Event{evs[0], ReplicaUpdate{Instance: "178b0921-8f85-4257-88b6-2e743b5a975c", Role: RoleDestination, Kind: ReplicaPrepared}, evs[1]}
	for _, ev := range evs {
		if err := j.Append(m.Step(now, ev).Persist); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	_, s, err = OpenJournal(OSFS{}, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	m = NewMachine(DefaultMachineConfig("host2"), s)
	rd := m.Step(now, Restart{})
	if fmt.Sprint(rd.Actions) != "[{178b0921-8f85-4257-88b6-2e743b5a975c compute}]" {
		t.Fatalf("restart actions %v", rd.Actions)
	}
	if _, ok := rd.Actions[0].(StartCopy); !ok {
		t.Fatalf("restart action %T, want StartCopy", rd.Actions[0])
	}
	if rd := m.Step(now, evs[2]); !rd.Duplicate || len(rd.Persist) != 0 {
		t.Fatalf("redelivered post.start: %+v", rd)
	}
}
