"""A test-only Cinder Fibre Channel driver standing in for an array that
presents the same LUNs on FC ports and on iSCSI ports (Method A).

The "array" is a directory: one sparse image file per volume and maps.json,
the LUN map of each host object (host objects are named by their sorted
WWPNs, the way FC drivers find them). Mapping a volume to a host gives it
the host's next free LUN number (from 1) and answers fibre_channel
connection_info with the array's FC target ports, as FC drivers without a
fabric lookup service do. The carrier host object (array_carrier_wwpns)
also holds the iSCSI initiators of the hosts without FC, so a volume mapped
to it appears, under the same LUN number, on the array's iSCSI target: a
tgtd target that the test created, to which this driver adds and removes
the LUN (tgtadm, through tgtd's control socket array_tgt_control). The data
itself is the image file, which the test also reaches as a block device
(its "FC path": a loop device) and through tgtd (the iSCSI path).

Only what the tests drive is implemented: create, delete, attach, detach.
"""
import fcntl
import json
import os
import subprocess

from oslo_config import cfg
from oslo_log import log as logging

from cinder import exception
from cinder.volume import driver

LOG = logging.getLogger(__name__)

array_opts = [
    cfg.StrOpt('array_dir', help='The array: volume images and maps.json.'),
    cfg.ListOpt('array_fc_targets', default=[],
                help='The array\'s FC target port names.'),
    cfg.ListOpt('array_carrier_wwpns', default=[],
                help='Port names of the carrier host object, whose LUNs the '
                     'array also presents on its iSCSI target.'),
    cfg.IntOpt('array_tgt_control', help='tgtd\'s control port (-C).'),
    cfg.IntOpt('array_tgt_tid', default=1, help='The iSCSI target\'s tid.'),
]


class ArrayFCDriver(driver.FibreChannelDriver):
    VERSION = '1.0'

    def __init__(self, *args, **kwargs):
        super(ArrayFCDriver, self).__init__(*args, **kwargs)
        self.configuration.append_config_values(array_opts)

    def check_for_setup_error(self):
        if not os.path.isdir(self.configuration.array_dir):
            raise exception.VolumeBackendAPIException(
                data='array_dir %s is not a directory' %
                self.configuration.array_dir)

    def _image(self, volume):
        return os.path.join(self.configuration.array_dir,
                            volume.name + '.img')

    def _maps(self, change):
        """Runs change(maps) under the array's lock; saves what it left."""
        path = os.path.join(self.configuration.array_dir, 'maps.json')
        with open(path + '.lock', 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            maps = {}
            if os.path.exists(path):
                with open(path) as f:
                    maps = json.load(f)
            result = change(maps)
            with open(path + '.tmp', 'w') as f:
                json.dump(maps, f, indent=1, sort_keys=True)
            os.rename(path + '.tmp', path)
            return result

    def _tgtadm(self, *args):
        subprocess.run(['tgtadm', '-C', str(self.configuration.array_tgt_control),
                        '--lld', 'iscsi'] + list(args),
                       check=True, capture_output=True, timeout=30)

    def _carries(self, host_key):
        carrier = set(w.lower() for w in self.configuration.array_carrier_wwpns)
        return bool(carrier & set(host_key.split(',')))

    def create_volume(self, volume):
        with open(self._image(volume), 'wb') as f:
            f.truncate(volume.size << 30)

    def delete_volume(self, volume):
        try:
            os.unlink(self._image(volume))
        except FileNotFoundError:
            pass

    def create_export(self, context, volume, connector):
        pass

    def ensure_export(self, context, volume):
        pass

    def remove_export(self, context, volume):
        pass

    def initialize_connection(self, volume, connector):
        wwpns = sorted(w.lower() for w in connector['wwpns'])
        host_key = ','.join(wwpns)

        def map_volume(maps):
            luns = maps.setdefault(host_key, {})
            if volume.id not in luns:
                luns[volume.id] = min(set(range(1, 256)) - set(luns.values()))
                if self._carries(host_key):
                    self._tgtadm('--op', 'new', '--mode', 'logicalunit',
                                 '--tid', str(self.configuration.array_tgt_tid),
                                 '--lun', str(luns[volume.id]),
                                 '--backing-store', self._image(volume))
            return luns[volume.id]

        lun = self._maps(map_volume)
        targets = [w.lower() for w in self.configuration.array_fc_targets]
        LOG.info('array: volume %s mapped to host %s as LUN %d',
                 volume.id, host_key, lun)
        return {'driver_volume_type': 'fibre_channel',
                'data': {'target_discovered': False, 'target_wwn': targets,
                         'target_lun': lun, 'volume_id': volume.id,
                         'initiator_target_map': {w: targets for w in wwpns}}}

    def terminate_connection(self, volume, connector, **kwargs):
        host_keys = None
        if connector is not None:
            host_keys = [','.join(sorted(w.lower() for w in connector['wwpns']))]

        def unmap(maps):
            for key in host_keys or list(maps):
                lun = maps.get(key, {}).pop(volume.id, None)
                if lun is not None and self._carries(key):
                    self._tgtadm('--op', 'delete', '--mode', 'logicalunit',
                                 '--tid', str(self.configuration.array_tgt_tid),
                                 '--lun', str(lun))

        self._maps(unmap)

    def _update_volume_stats(self):
        name = self.configuration.safe_get('volume_backend_name') or 'array'
        self._stats = {
            'volume_backend_name': name, 'vendor_name': 'shareless tests',
            'driver_version': self.VERSION, 'storage_protocol': 'FC',
            'pools': [{'pool_name': name, 'total_capacity_gb': 'infinite',
                       'free_capacity_gb': 'infinite',
                       'reserved_percentage': 0, 'QoS_support': False,
                       'thin_provisioning_support': True}]}
