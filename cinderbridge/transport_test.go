package cinderbridge

import (
	"errors"
	"github.com/shareless/shareless/internal/secret"
	"reflect"
	"strings"
	"testing"
)

const (
	wA1 WWN = "500a098280feeba5" // array A, controller 1
	wA2 WWN = "500a098290feeba5" // array A, controller 2
	wB1 WWN = "524a937000000001" // array B

	iqnA1 = "iqn.1992-08.com.netapp:sn.a1"
	iqnA2 = "iqn.1992-08.com.netapp:sn.a2"
	iqnB  = "iqn.2010-06.com.purestorage:flasharray.b"
)

func testMap() *TransportMap {
	return &TransportMap{Backends: []Backend{{
		Name:      "fc-a",
		FCTargets: []WWN{wA1, wA2},
		ISCSI: []ISCSIPath{
			{Portal: Portal{"192.0.2.10", 3260}, IQN: iqnA1, FCTargets: []WWN{wA1}},
			{Portal: Portal{"192.0.2.11", 3260}, IQN: iqnA2, FCTargets: []WWN{wA2}},
		},
		CHAP: &CHAP{Username: "shareless", Password: secret.New("0123456789abcdef")},
	}, {
		Name:      "fc-b",
		FCTargets: []WWN{wB1},
		ISCSI: []ISCSIPath{
			{Portal: Portal{"198.51.100.20", 3260}, IQN: iqnB},
			{Portal: Portal{"2001:db8::20", 3260}, IQN: iqnB},
		},
		LUN: LUNMapping{Offset: 100},
	}, {
		Name:      "fc-c",
		FCTargets: []WWN{"5000000000000c01"},
		ISCSI:     []ISCSIPath{{Portal: Portal{"203.0.113.5", 3260}, IQN: "iqn.2000-01.com.example:c"}},
		LUN:       LUNMapping{Explicit: map[int]int{1: 11, 2: 12, 3: 12}},
	}}}
}

func TestTransportMapValidate(t *testing.T) {
	if err := testMap().Validate(); err != nil {
		t.Fatal(err)
	}
	breakers := map[string]func(m *TransportMap){
		"empty name":          func(m *TransportMap) { m.Backends[0].Name = "" },
		"name with @":         func(m *TransportMap) { m.Backends[0].Name = "host@fc-a" },
		"duplicate":           func(m *TransportMap) { m.Backends[1].Name = "fc-a" },
		"wwn not canonical":   func(m *TransportMap) { m.Backends[0].FCTargets[0] = "500A098280FEEBA5" },
		"bad iqn":             func(m *TransportMap) { m.Backends[0].ISCSI[0].IQN = "target1" },
		"no port":             func(m *TransportMap) { m.Backends[0].ISCSI[0].Portal.Port = 0 },
		"path port unknown":   func(m *TransportMap) { m.Backends[0].ISCSI[0].FCTargets = []WWN{wB1} },
		"chap no password":    func(m *TransportMap) { m.Backends[0].CHAP.Password = secret.Secret{} },
		"offset out of range": func(m *TransportMap) { m.Backends[1].LUN.Offset = 20000 },
		"explicit range":      func(m *TransportMap) { m.Backends[2].LUN.Explicit[4] = 16384 },
	}
	for name, brk := range breakers {
		m := testMap()
		brk(m)
		var me *MapError
		if err := m.Validate(); !errors.As(err, &me) || me.Problem != BadMap {
			t.Errorf("%s: err = %v, want BadMap", name, err)
		}
	}
}

func TestFCToISCSI(t *testing.T) {
	chap := &CHAP{Username: "shareless", Password: secret.New("0123456789abcdef")}
	tests := []struct {
		name string
		fc   *FibreChannel
		host string
		want *ISCSI
	}{{
		name: "both controllers, same LUN, chosen by host, attrs carried, host-local dropped",
		fc: &FibreChannel{
			Attrs: Attrs{VolumeID: "v1", AccessMode: "rw", Discard: true, Encrypted: true,
				QoSSpecs: map[string]string{"total_iops_sec": "500"}, DevicePath: "/dev/dm-0",
				MultipathID: "3600a", AttachmentID: "att", TargetDiscovered: true},
			Targets: []FCTarget{{wA1, 5}, {wA2, 5}},
		},
		host: "ctl1@fc-a#pool0",
		want: &ISCSI{
			Attrs: Attrs{VolumeID: "v1", AccessMode: "rw", Discard: true, Encrypted: true,
				QoSSpecs: map[string]string{"total_iops_sec": "500"}},
			Targets: []ISCSITarget{{Portal{"192.0.2.10", 3260}, iqnA1, 5}, {Portal{"192.0.2.11", 3260}, iqnA2, 5}},
			Auth:    chap,
		},
	}, {
		name: "one controller zoned: only its iSCSI target",
		fc:   &FibreChannel{Targets: []FCTarget{{wA2, 7}}},
		want: &ISCSI{Targets: []ISCSITarget{{Portal{"192.0.2.11", 3260}, iqnA2, 7}}, Auth: chap},
	}, {
		name: "per-port LUNs on per-port targets",
		fc:   &FibreChannel{Targets: []FCTarget{{wA1, 5}, {wA2, 6}}},
		want: &ISCSI{Targets: []ISCSITarget{{Portal{"192.0.2.10", 3260}, iqnA1, 5}, {Portal{"192.0.2.11", 3260}, iqnA2, 6}}, Auth: chap},
	}, {
		name: "offset, chosen by WWN, two portals one IQN",
		fc:   &FibreChannel{Targets: []FCTarget{{wB1, 3}}, Attrs: Attrs{AddressingMode: "SAM2"}},
		want: &ISCSI{Attrs: Attrs{AddressingMode: "SAM2"},
			Targets: []ISCSITarget{{Portal{"198.51.100.20", 3260}, iqnB, 103}, {Portal{"2001:db8::20", 3260}, iqnB, 103}}},
	}, {
		name: "explicit LUN map, host name given bare",
		fc:   &FibreChannel{Targets: []FCTarget{{"5000000000000c01", 2}}},
		host: "fc-c",
		want: &ISCSI{Targets: []ISCSITarget{{Portal{"203.0.113.5", 3260}, "iqn.2000-01.com.example:c", 12}}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := testMap().FCToISCSI(tt.fc, tt.host)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestFCToISCSIDoesNotAlias(t *testing.T) {
	m := testMap()
	fc := &FibreChannel{Attrs: Attrs{QoSSpecs: map[string]string{"a": "1"}}, Targets: []FCTarget{{wA1, 1}}}
	got, err := m.FCToISCSI(fc, "")
	if err != nil {
		t.Fatal(err)
	}
	got.QoSSpecs["a"] = "2"
	got.Auth.Username = "x"
	if fc.QoSSpecs["a"] != "1" || m.Backends[0].CHAP.Username != "shareless" {
		t.Error("the translation shares state with its inputs")
	}
}

func TestFCToISCSIErrors(t *testing.T) {
	tests := []struct {
		name    string
		fc      *FibreChannel
		host    string
		problem MapProblem
		detail  string
	}{
		{"unknown backend", &FibreChannel{Targets: []FCTarget{{wA1, 1}}}, "h@fc-z#p", NoBackend, `"fc-z"`},
		{"unknown wwn", &FibreChannel{Targets: []FCTarget{{"5000000000000999", 1}}}, "", NoBackend, "5000000000000999"},
		{"wwn spanning backends", &FibreChannel{Targets: []FCTarget{{wA1, 1}, {wB1, 1}}}, "", NoBackend, string(wB1)},
		{"stale map", &FibreChannel{Targets: []FCTarget{{wA1, 1}, {"5000000000000999", 1}}}, "h@fc-a", UncoveredWWN, "5000000000000999"},
		{"explicit lun missing", &FibreChannel{Targets: []FCTarget{{"5000000000000c01", 9}}}, "", UncoveredLUN, "FC LUN 9"},
		{"offset out of range", &FibreChannel{Targets: []FCTarget{{wB1, MaxLUN}}}, "", UncoveredLUN, "out of"},
		{"ambiguous lun", &FibreChannel{Targets: []FCTarget{{wB1, 1}, {wB1, 2}}}, "", AmbiguousLUN, iqnB},
		{"no target", &FibreChannel{}, "", NoPath, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testMap().FCToISCSI(tt.fc, tt.host)
			var me *MapError
			if !errors.As(err, &me) || me.Problem != tt.problem || !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("err = %v, want %v mentioning %q", err, tt.problem, tt.detail)
			}
		})
	}
	// Two backends listing one port: the volume host must decide.
	m := testMap()
	m.Backends = append(m.Backends, Backend{Name: "fc-a-again", FCTargets: []WWN{wA1}})
	var me *MapError
	if _, err := m.FCToISCSI(&FibreChannel{Targets: []FCTarget{{wA1, 1}}}, ""); !errors.As(err, &me) || me.Problem != AmbiguousBackend {
		t.Errorf("err = %v, want AmbiguousBackend", err)
	}
	if _, err := m.FCToISCSI(&FibreChannel{Targets: []FCTarget{{wA1, 1}}}, "x@fc-a"); err != nil {
		t.Errorf("with the host: %v", err)
	}
	// A backend with iSCSI targets tied to other ports only.
	m = testMap()
	m.Backends[0].ISCSI = m.Backends[0].ISCSI[1:]
	if _, err := m.FCToISCSI(&FibreChannel{Targets: []FCTarget{{wA1, 1}}}, ""); !errors.As(err, &me) || me.Problem != NoPath {
		t.Errorf("err = %v, want NoPath", err)
	}
}

func TestISCSIToFC(t *testing.T) {
	host := &Connector{WWPNs: []string{"21000024FF3A2B10", "21000024ff3a2b11"}}
	tests := []struct {
		name string
		in   *ISCSI
		host string
		conn *Connector
		want *FibreChannel
	}{{
		name: "per-controller targets back to their ports, itmap from connector",
		in: &ISCSI{Attrs: Attrs{VolumeID: "v1", DevicePath: "/dev/sdc"},
			Targets: []ISCSITarget{{Portal{"192.0.2.11", 3260}, iqnA2, 5}, {Portal{"192.0.2.10", 3260}, strings.ToUpper(iqnA1), 5}},
			Auth:    &CHAP{"u", secret.New("p")}},
		conn: host,
		want: &FibreChannel{Attrs: Attrs{VolumeID: "v1"},
			Targets: []FCTarget{{wA1, 5}, {wA2, 5}},
			InitiatorTargetMap: map[WWN][]WWN{
				"21000024ff3a2b10": {wA1, wA2}, "21000024ff3a2b11": {wA1, wA2}}},
	}, {
		name: "offset inverted, untied target means every port",
		in:   &ISCSI{Targets: []ISCSITarget{{Portal{"198.51.100.20", 3260}, iqnB, 103}}},
		host: "h@fc-b#p",
		want: &FibreChannel{Targets: []FCTarget{{wB1, 3}}},
	}, {
		name: "explicit inverted",
		in:   &ISCSI{Targets: []ISCSITarget{{Portal{"203.0.113.5", 3260}, "iqn.2000-01.com.example:c", 11}}},
		want: &FibreChannel{Targets: []FCTarget{{"5000000000000c01", 1}}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := testMap().ISCSIToFC(tt.in, tt.host, tt.conn)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestISCSIToFCErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      *ISCSI
		problem MapProblem
	}{
		{"unknown iqn", &ISCSI{Targets: []ISCSITarget{{Portal{"192.0.2.1", 3260}, "iqn.2000-01.x:unknown", 1}}}, NoBackend},
		// Explicit map sends FC LUNs 2 and 3 to iSCSI LUN 12.
		{"not invertible", &ISCSI{Targets: []ISCSITarget{{Portal{"203.0.113.5", 3260}, "iqn.2000-01.com.example:c", 12}}}, AmbiguousLUN},
		{"explicit missing", &ISCSI{Targets: []ISCSITarget{{Portal{"203.0.113.5", 3260}, "iqn.2000-01.com.example:c", 13}}}, UncoveredLUN},
		{"offset below zero", &ISCSI{Targets: []ISCSITarget{{Portal{"198.51.100.20", 3260}, iqnB, 99}}}, UncoveredLUN},
		{"two luns one port", &ISCSI{Targets: []ISCSITarget{{Portal{"198.51.100.20", 3260}, iqnB, 103}, {Portal{"2001:db8::20", 3260}, iqnB, 104}}}, AmbiguousLUN},
		{"no target", &ISCSI{}, NoPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testMap().ISCSIToFC(tt.in, "", nil)
			var me *MapError
			if !errors.As(err, &me) || me.Problem != tt.problem {
				t.Errorf("err = %v, want %v", err, tt.problem)
			}
		})
	}
	var fe *FieldError
	_, err := testMap().ISCSIToFC(&ISCSI{Targets: []ISCSITarget{{Portal{"198.51.100.20", 3260}, iqnB, 103}}}, "", &Connector{WWPNs: []string{"nope"}})
	if !errors.As(err, &fe) || fe.Key != "wwpns[0]" {
		t.Errorf("bad connector wwpn: err = %v", err)
	}
}

// FC -> iSCSI -> FC gives back the same targets: the retype there and
// back must land on the same LUN.
func TestTranslationRoundTrip(t *testing.T) {
	m := testMap()
	for _, fc := range []*FibreChannel{
		{Targets: []FCTarget{{wA1, 5}, {wA2, 5}}},
		{Targets: []FCTarget{{wA1, 5}, {wA2, 9}}},
		{Targets: []FCTarget{{wB1, 0}}},
		{Targets: []FCTarget{{"5000000000000c01", 1}}},
	} {
		is, err := m.FCToISCSI(fc, "")
		if err != nil {
			t.Fatal(err)
		}
		back, err := m.ISCSIToFC(is, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, fc) {
			t.Errorf("%+v -> %+v -> %+v", fc, is, back)
		}
	}
}
