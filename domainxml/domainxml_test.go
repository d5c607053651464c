package domainxml

import (
	"bytes"
	"testing"
)

// managed is an adopted domain as libvirt writes it: the root disk is a
// managed disk's iSCSI LUN, the second a file, the third a CD-ROM.
const managed = `<domain type='qemu'>
  <name>instance-00000001</name>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none' discard='unmap'/>
      <source protocol='iscsi' name='iqn.2026-11.io.shareless:u1.disk/0'>
        <host name='127.0.0.1' port='3260'/>
        <auth username='shareless'>
          <secret type='iscsi' usage='shareless-chap'/>
        </auth>
      </source>
      <target dev='vda' bus='virtio'/>
      <serial>root</serial>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="/var/lib/nova/instances/u1/disk.eph0"/>
      <target dev="vdb" bus="virtio"/>
    </disk>
    <disk type='network' device='disk'>
      <auth username='old'><secret type='iscsi' usage='x'/></auth>
      <source protocol='iscsi' name='iqn.2026-11.io.shareless:u1.disk.local/0'><host name='127.0.0.1' port='3260'/></source>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hda' bus='ide'/>
    </disk>
  </devices>
</domain>
`

func TestDisks(t *testing.T) {
	ds, err := Disks([]byte(managed))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 4 {
		t.Fatalf("%d disks, want 4", len(ds))
	}
	root, eph, local, cd := ds[0], ds[1], ds[2], ds[3]
	if root.Type != "network" || root.Device != "disk" || root.TargetDev != "vda" || root.SourceProtocol != "iscsi" ||
		root.SourceName != "iqn.2026-11.io.shareless:u1.disk/0" || !root.HasSerial || root.Serial != "root" ||
		!root.HasSource || !root.SourcePretty || root.Indent != "    " || root.SourceIndent != "      " || len(root.Auths) != 0 {
		t.Errorf("root disk %+v", root)
	}
	if got := managed[root.Source.Start:root.Source.End]; !bytes.HasPrefix([]byte(got), []byte("<source protocol=")) || !bytes.HasSuffix([]byte(got), []byte("</source>")) {
		t.Errorf("root disk's source span %q", got)
	}
	if eph.Type != "file" || eph.SourceFile != "/var/lib/nova/instances/u1/disk.eph0" || eph.TargetDev != "vdb" {
		t.Errorf("file disk %+v", eph)
	}
	if len(local.Auths) != 1 {
		t.Errorf("disk with a disk-level auth %+v", local)
	}
	if cd.Device != "cdrom" || cd.HasSource {
		t.Errorf("cdrom %+v", cd)
	}
	if _, err := Disks([]byte("<domain><devices><disk>")); err == nil {
		t.Error("truncated XML parsed")
	}
}

func TestNetworkToFiles(t *testing.T) {
	files := map[string]string{
		"iqn.2026-11.io.shareless:u1.disk/0":       "/var/lib/nova/instances/u1/disk",
		"iqn.2026-11.io.shareless:u1.disk.local/0": "/var/lib/nova/instances/u1/disk.local",
		"iqn.2026-11.io.shareless:other.disk/0":    "/elsewhere",
	}
	out, n, err := NetworkToFiles([]byte(managed), files)
	if err != nil {
		t.Fatal(err)
	}
	want := `<domain type='qemu'>
  <name>instance-00000001</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' discard='unmap'/>
      <source file='/var/lib/nova/instances/u1/disk'/>
      <target dev='vda' bus='virtio'/>
      <serial>root</serial>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="/var/lib/nova/instances/u1/disk.eph0"/>
      <target dev="vdb" bus="virtio"/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/var/lib/nova/instances/u1/disk.local'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hda' bus='ide'/>
    </disk>
  </devices>
</domain>
`
	if n != 2 || string(out) != want {
		t.Errorf("%d disks changed, want 2; got:\n%s", n, out)
	}
	again, n, err := NetworkToFiles(out, files)
	if err != nil || n != 0 || !bytes.Equal(again, out) {
		t.Errorf("a second rewrite changed %d disks (%v)", n, err)
	}
}

func TestSetAttr(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`<disk type='network' device='disk'>`, `<disk type='file' device='disk'>`},
		{`<disk device="disk" type = "network">`, `<disk device="disk" type = "file">`},
	} {
		got, err := SetAttr([]byte(c.in), "type", "file")
		if err != nil || string(got) != c.want {
			t.Errorf("SetAttr(%s) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	if _, err := SetAttr([]byte(`<disk device='disk'>`), "type", "file"); err == nil {
		t.Error("SetAttr of a missing attribute succeeded")
	}
	if got, _ := SetAttr([]byte(`<source file='x'/>`), "file", `a'<&`); string(got) != `<source file='a&#39;&lt;&amp;'/>` {
		t.Errorf("escaping: %s", got)
	}
}

// FuzzNetworkToFiles: any input is refused or rewritten into XML that
// parses, with as many disks, and a second rewrite changes nothing.
func FuzzNetworkToFiles(f *testing.F) {
	f.Add([]byte(managed), "iqn.2026-11.io.shareless:u1.disk/0", "/p/disk")
	f.Add([]byte(`<domain><devices><disk type="network"><source name="a"/></disk></devices></domain>`), "a", `x"'<`)
	f.Fuzz(func(t *testing.T, domain []byte, name, path string) {
		out, n, err := NetworkToFiles(domain, map[string]string{name: path})
		if err != nil {
			return
		}
		before, _ := Disks(domain)
		after, err := Disks(out) // which reads the whole document
		if err != nil {
			t.Fatalf("output does not parse: %v\n%s", err, out)
		}
		if len(after) != len(before) {
			t.Fatalf("%d disks became %d", len(before), len(after))
		}
		again, m, err := NetworkToFiles(out, map[string]string{name: path})
		if err != nil || m != 0 || !bytes.Equal(again, out) {
			t.Fatalf("second rewrite: %d changed, %v (first changed %d)", m, err, n)
		}
	})
}
