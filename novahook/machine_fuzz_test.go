package novahook

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

// FuzzMachine feeds arbitrary sequences of notifications (any event, any
// pair of hosts, old and new timestamps, redeliveries), hook calls, replica
// updates, ticks and restarts to the destination host2 and checks the
// invariants the shell relies on:
//
//   - replicas are never discarded after the switch-over of the same
//     attempt (the guest runs on them);
//   - every migrate hook call is answered exactly once, by its deadline;
//   - a redelivered message that was applied is a duplicate and does nothing;
//   - a restart from the persisted ops gives back the same records.
func FuzzMachine(f *testing.F) {
	f.Add([]byte{0, 1, 40, 2, 3, 4, 5, 60, 61})
	f.Add([]byte{40, 0, 41, 6, 7, 62, 8, 63, 9})
	f.Add([]byte{0, 6, 2, 64, 0x80, 3, 61, 65})
	f.Fuzz(func(t *testing.T, script []byte) {
		events := []string{EventPreStart, EventPreEnd, EventPostStart, EventPostDestStart, EventPostDestEnd, EventPostEnd,
			EventRollbackStart, EventRollbackEnd, EventRollbackDestStart, EventRollbackDestEnd,
			EventAbortStart, EventAbortEnd, EventForceCompleteStart, EventForceCompleteEnd}
		hosts := []string{"compute", "host2", "host3"}
		now := time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC)
		m := NewMachine(DefaultMachineConfig("host2"), NewState())
		persisted := NewState()
		var sent []Notification
		pendingHooks := map[uint64]time.Time{}
		answered := map[uint64]bool{}
		switched := map[string]bool{} // instance: StartCopy since the last PrepareReplicas
		var hookID uint64
		check := func(rd Ready) {
			persisted.Apply(rd.Persist)
			for _, a := range rd.Actions {
				switch a := a.(type) {
				case PrepareReplicas:
					switched[a.Instance] = false
				case StartCopy:
					switched[a.Instance] = true
				case DiscardReplicas:
					if switched[a.Instance] {
						t.Fatalf("replicas of %s discarded after the switch-over", a.Instance)
					}
				case HookReply:
					if answered[a.ID] {
						t.Fatalf("hook %d answered twice", a.ID)
					}
					if _, ok := pendingHooks[a.ID]; !ok {
						t.Fatalf("reply to unknown hook %d", a.ID)
					}
					answered[a.ID] = true
					delete(pendingHooks, a.ID)
				}
			}
		}
		for i, b := range script {
			now = now.Add(time.Second)
			instance := fmt.Sprintf("vm%d", b>>7)
			switch op := int(b & 0x7f); {
			case op < 40: // a notification
				e := events[op%len(events)]
				pub := hosts[(op/len(events))%len(hosts)]
				payloadHost := hosts[(op/3)%len(hosts)]
				ts := now
				if op%5 == 4 {
					ts = now.Add(-time.Hour) // late
				}
				n := Notification{MessageID: fmt.Sprintf("m%d", i), EventType: e, Priority: "INFO",
					Publisher: Publisher{"nova-compute", pub}, Timestamp: ts,
					Payload: Payload{Name: "InstanceActionPayload", Version: "1.9", InstanceUUID: instance, Host: payloadHost}}
				sent = append(sent, n)
				check(m.Step(now, n))
			case op < 50 && len(sent) > 0: // a redelivery
				n := sent[op%len(sent)]
				_, applied := persisted.Seen[n.MessageID]
				rd := m.Step(now, n)
				if applied && (!rd.Duplicate || len(rd.Persist) > 0 || len(rd.Actions) > 0) {
					t.Fatalf("redelivery of applied %s not a duplicate: %+v", n.MessageID, rd)
				}
				check(rd)
			case op < 60:
				hookID++
				pendingHooks[hookID] = now.Add(time.Duration(op-49) * 5 * time.Second)
				check(m.Step(now, HookCall{ID: hookID, Op: HookMigrateBegin, Instance: instance, Deadline: pendingHooks[hookID]}))
			case op < 64:
				kind := []ReplicaKind{ReplicaPrepared, ReplicaPrepareFailed, ReplicaProgress, ReplicaCopied}[op-60]
				check(m.Step(now, ReplicaUpdate{Instance: instance, Role: RoleDestination, Kind: kind, Done: 1, Total: 2}))
			case op < 70:
				now = now.Add(time.Duration(op-63) * 10 * time.Second)
				check(m.Step(now, Tick{}))
				for id, deadline := range pendingHooks {
					if !now.Before(deadline) {
						t.Fatalf("hook %d not answered by its deadline", id)
					}
				}
			case op < 72:
				if !reflect.DeepEqual(withoutProgress(persisted), withoutProgress(m.state)) {
					t.Fatalf("persisted state differs from the machine's:\n%+v\n%+v", withoutProgress(persisted), withoutProgress(m.state))
				}
				restored := NewState()
				restored.Apply(persisted.Snapshot())
				m = NewMachine(DefaultMachineConfig("host2"), restored)
				pendingHooks = map[uint64]time.Time{} // their connections died
				check(m.Step(now, Restart{}))
			}
		}
	})
}

// withoutProgress returns the records without the copy progress, which the
// machine keeps in memory between persisted steps.
func withoutProgress(s *State) []Migration {
	var out []Migration
	for _, r := range s.sorted() {
		c := *r
		c.Done, c.Total = 0, 0
		out = append(out, c)
	}
	return out
}
