package agent

import "testing"

func TestDiskNames(t *testing.T) {
	const inst = "0d1c8e5e-7b1a-4f57-9f5d-1a2b3c4d5e6f"
	ref, err := NewDiskRef(inst, "disk.local")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ref.IQN(), "iqn.2026-11.io.shareless:"+inst+".disk.local"; got != want {
		t.Errorf("IQN %q, want %q", got, want)
	}
	back, err := parseStoreName(ref.storeName())
	if err != nil || back != ref {
		t.Errorf("store name %q parses to %+v, %v", ref.storeName(), back, err)
	}
	if back, err := parseIQN(ref.IQN()); err != nil || back != ref {
		t.Errorf("IQN %q parses to %+v, %v", ref.IQN(), back, err)
	}
	for _, bad := range []string{"iqn.2008-11.org.linux-kvm:" + inst + ".disk", initiatorName("compute1"), "iqn.2026-11.io.shareless:" + inst} {
		if ref, err := parseIQN(bad); err == nil {
			t.Errorf("parseIQN(%q) = %+v", bad, ref)
		}
	}
	for _, bad := range [][2]string{
		{"0D1C8E5E-7B1A-4F57-9F5D-1A2B3C4D5E6F", "disk"}, // Nova's UUIDs are lower case
		{"not-a-uuid", "disk"},
		{inst, ""}, {inst, ".hidden"}, {inst, "Disk"}, {inst, "a_b"}, {inst, "a/b"},
	} {
		if _, err := NewDiskRef(bad[0], bad[1]); err == nil {
			t.Errorf("NewDiskRef(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if got := initiatorName("Compute_01.example"); got != "iqn.2026-11.io.shareless:agent.compute-01.example" {
		t.Errorf("initiator name %q", got)
	}
}

// TestStateLock: a second agent on the same state directory is refused.
func TestStateLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockState(dir); err == nil {
		t.Fatal("second lock of one state directory granted")
	}
	unlock()
	unlock2, err := lockState(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}
