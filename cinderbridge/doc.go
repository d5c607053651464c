// Package cinderbridge implements Method A of the design (design.md §3): a
// Cinder volume that the source host reaches by Fibre Channel is reached by
// the destination host over iSCSI, for the same LUN of the same array, and
// the destination's libvirt disk becomes a QEMU-native iSCSI network disk
// (libiscsi inside QEMU, so the destination needs neither an FC HBA nor a
// kernel initiator).
//
// The package parses and writes Cinder connection_info and os-brick
// connector dicts, translates between the FC and the iSCSI presentation of
// a LUN from an operator-written transport map (LoadTransportMap, its only
// I/O), takes the decisions of the Cinder driver wrapper (Decide: which
// connector the wrapped FC driver sees, what to answer, when to unmap,
// whether a retype moves data), and rewrites libvirt domain XML. The
// agent's migrate hook, `shareless cinder-driver` and the wrapper in
// cinderdriver/ are its callers.
//
// The shapes mirror what OpenStack actually produces:
//
//   - connection_info: cinder/volume/targets/iscsi.py _get_iscsi_properties,
//     cinder/volume/driver.py FibreChannelDriver.initialize_connection,
//     cinder/volume/manager.py _parse_connection_options and
//     _connection_create (the flattened attachments form), and Nova's
//     nova/volume/cinder.py _translate_attachment_ref (back to nested);
//   - how the keys are read: os-brick's
//     os_brick/initiator/connectors/fibre_channel.py
//     _add_targets_to_connection_properties and
//     os_brick/initiator/connectors/base_iscsi.py _get_all_targets;
//   - the connector: os_brick/initiator/connector.py get_connector_properties;
//   - the disk rewrite: nova/virt/libvirt/migration.py _update_volume_xml,
//     which matches a volume's disk by <serial>.
//
// Where Nova's own live migration breaks, and what the bridge supplies:
//
//  1. On the destination, nova/compute/manager.py pre_live_migration calls
//     attachment_create (microversion 3.44) with the destination's
//     connector. An FC-only driver's validate_connector wants wwpns and
//     wwnns; a host without an FC HBA has none, Cinder answers 400 and Nova
//     rolls the migration back. Connector.Validate reproduces that check;
//     TransportMap.FCToISCSI computes the iSCSI answer for the same LUN.
//  2. Nova then connects the volume with the driver for the answer's
//     driver_volume_type (nova/virt/libvirt/driver.py VOLUME_DRIVERS):
//     "iscsi" means LibvirtISCSIVolumeDriver, i.e. os-brick and iscsiadm, a
//     kernel initiator on the destination. Nova has no QEMU-native iSCSI
//     volume driver any more (volume/net.py handles rbd only).
//     The wrapper (cinderdriver/) maps the volume to the array's carrier
//     host object through the FC driver and answers the iSCSI presentation
//     of that LUN instead: "iscsi" to a host with an initiator, else
//     "local" with os-brick's by-path name of the LUN (ByPath), which
//     Nova's local volume driver takes without touching the host.
//  3. Nova rewrites the volume disks from the destination's
//     connection_info on the source side, but only their children, never
//     the disk's type attribute; the destination's "migrate begin" hook
//     gets that XML on stdin. RewriteDomainXML turns the disk into a
//     network disk that QEMU's libiscsi reaches by itself.
package cinderbridge
