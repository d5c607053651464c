package cinderbridge_test

import (
	"fmt"
	"github.com/shareless/shareless/internal/secret"
	"log"

	"github.com/shareless/shareless/cinderbridge"
)

// The whole of Method A on the destination, from the source's FC
// connection_info to the disk XML QEMU will open and the secret libvirt
// must hold first.
func Example() {
	// What the source's attachment says (flattened, as the attachments
	// API returns it).
	src, err := cinderbridge.Parse([]byte(`{"driver_volume_type": "fibre_channel",
		"target_wwn": ["500A098280FEEBA5"], "target_lun": 1, "discard": true,
		"volume_id": "6b1e8a1c-39d0-4c6e-9a9b-2c3f8d9e0a11", "access_mode": "rw"}`))
	if err != nil {
		log.Fatal(err)
	}
	fc := src.(*cinderbridge.FibreChannel)

	// What the agent's config says about the array.
	m := &cinderbridge.TransportMap{Backends: []cinderbridge.Backend{{
		Name:      "netapp-fc",
		FCTargets: []cinderbridge.WWN{"500a098280feeba5"},
		ISCSI: []cinderbridge.ISCSIPath{{
			Portal: cinderbridge.Portal{Host: "192.0.2.10", Port: 3260},
			IQN:    "iqn.1992-08.com.netapp:sn.a1",
		}},
		CHAP: &cinderbridge.CHAP{Username: "shareless", Password: secret.New("0123456789abcdef")},
	}}}
	if err := m.Validate(); err != nil {
		log.Fatal(err)
	}
	is, err := m.FCToISCSI(fc, "cinder1@netapp-fc#pool0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("iSCSI:", is.Targets[0].Portal, is.Targets[0].IQN, is.Targets[0].LUN, "CHAP user", is.Auth.Username, "password", is.Auth.Password)

	usage := cinderbridge.SecretUsage(is.Targets[0].IQN, is.Auth.Username)
	secret, err := cinderbridge.SecretXML(usage, "CHAP for netapp-fc")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(secret))

	out, err := cinderbridge.RewriteDomainXML([]byte(`<domain>
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='/dev/disk/by-path/pci-0000:05:00.2-fc-0x500a098280feeba5-lun-1'/>
      <target dev='vdb' bus='virtio'/>
      <serial>6b1e8a1c-39d0-4c6e-9a9b-2c3f8d9e0a11</serial>
    </disk>
  </devices>
</domain>`), []cinderbridge.ISCSIDisk{{
		VolumeID:     fc.VolumeID,
		Conn:         is,
		SecretUsage:  usage,
		InitiatorIQN: "iqn.1993-08.org.debian:01:compute2",
	}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(out))
	// Output:
	// iSCSI: 192.0.2.10:3260 iqn.1992-08.com.netapp:sn.a1 1 CHAP user shareless password <redacted>
	// <secret ephemeral='no' private='yes'>
	//   <description>CHAP for netapp-fc</description>
	//   <usage type='iscsi'>
	//     <target>shareless-chap iqn.1992-08.com.netapp:sn.a1 shareless</target>
	//   </usage>
	// </secret>
	// <domain>
	//   <devices>
	//     <disk type='network' device='disk'>
	//       <driver name='qemu' type='raw' cache='none' io='native'/>
	//       <source protocol='iscsi' name='iqn.1992-08.com.netapp:sn.a1/1'>
	//         <host name='192.0.2.10' port='3260'/>
	//         <auth username='shareless'>
	//           <secret type='iscsi' usage='shareless-chap iqn.1992-08.com.netapp:sn.a1 shareless'/>
	//         </auth>
	//         <initiator>
	//           <iqn name='iqn.1993-08.org.debian:01:compute2'/>
	//         </initiator>
	//       </source>
	//       <target dev='vdb' bus='virtio'/>
	//       <serial>6b1e8a1c-39d0-4c6e-9a9b-2c3f8d9e0a11</serial>
	//     </disk>
	//   </devices>
	// </domain>
}
