"""Cinder volume driver wrapper: an FC-only array's volumes for hosts without FC.

``TransportBridgeDriver`` wraps the array's own Fibre Channel driver (named
by ``shareless_wrapped_driver``) in the same Cinder backend. Every call goes
to that driver, except four where a host without FC ports, or a volume type
with ``shareless:transport=iscsi``, needs another answer; for those the
wrapper asks ``shareless cinder-driver`` (JSON on stdin and stdout), which
holds all of the logic:

- validate_connector, create_export, initialize_connection: the FC driver
  gets the host's own connector, or, for a host reached over iSCSI, the
  backend's carrier (a host object on the array holding placeholder WWPNs
  and the iSCSI hosts' initiator names); its FC answer becomes the iSCSI
  presentation of the same LUN: ``iscsi`` for a host with an initiator,
  ``local`` with os-brick's by-path name of the LUN for a host without one
  (Nova connects nothing for ``local``; the shareless hook turns the disk
  into a QEMU-native iSCSI disk).
- terminate_connection: the carrier's mapping is removed only when no other
  attachment of the volume uses it.
- retype: a change of ``shareless:transport`` alone needs no data movement.
"""

import json
import subprocess

from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import importutils

from cinder import exception

LOG = logging.getLogger(__name__)

shareless_opts = [
    cfg.StrOpt('shareless_wrapped_driver',
               help='Class of the array\'s Fibre Channel volume driver, '
                    'for example '
                    'cinder.volume.drivers.pure.PureFCDriver.'),
    cfg.StrOpt('shareless_command', default='/usr/local/bin/shareless',
               help='The shareless binary.'),
    cfg.StrOpt('shareless_transport_map',
               default='/etc/shareless/transport.json',
               help='The transport map: the array\'s FC ports, iSCSI '
                    'targets, CHAP, LUN mapping and carrier.'),
    cfg.IntOpt('shareless_timeout', default=30,
               help='Seconds one shareless call may take.'),
]

TRANSPORT_SPEC = 'shareless:transport'


class _Bridge(object):
    """The overrides; mixed in before the wrapped driver's class."""

    def _shareless(self, request):
        conf = self.configuration
        cmd = [conf.shareless_command, 'cinder-driver',
               '--transport-map', conf.shareless_transport_map]
        try:
            proc = subprocess.run(cmd, input=json.dumps(request).encode(),
                                  capture_output=True, check=False,
                                  timeout=conf.shareless_timeout)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise exception.VolumeBackendAPIException(
                data='shareless cinder-driver: %s' % err)
        if proc.returncode != 0:
            raise exception.VolumeBackendAPIException(
                data='shareless cinder-driver: %s' %
                proc.stderr.decode(errors='replace').strip())
        return json.loads(proc.stdout)

    def _volume(self, volume):
        vtype = volume.volume_type
        specs = (vtype.extra_specs or {}) if vtype else {}
        return {'id': volume.id, 'host': volume.host,
                'transport': specs.get(TRANSPORT_SPEC) or ''}

    def _route(self, volume, connector):
        return self._shareless({'op': 'route', 'volume': volume,
                                'connector': connector})['connector']

    def validate_connector(self, connector):
        # No volume here: the route of a volume without a transport spec.
        volume = {'id': '', 'host': self.host, 'transport': ''}
        return super(_Bridge, self).validate_connector(
            self._route(volume, connector))

    def create_export(self, context, volume, connector):
        return super(_Bridge, self).create_export(
            context, volume, self._route(self._volume(volume), connector))

    def initialize_connection(self, volume, connector):
        vol = self._volume(volume)
        fc = super(_Bridge, self).initialize_connection(
            volume, self._route(vol, connector))
        return self._shareless({'op': 'present', 'volume': vol,
                                'connector': connector,
                                'connection_info': fc})['connection_info']

    def terminate_connection(self, volume, connector, **kwargs):
        if connector is None:  # a forced detach from every host
            return super(_Bridge, self).terminate_connection(
                volume, connector, **kwargs)
        attachments = [
            {'connector': a.connector,
             'driver_volume_type':
                 (a.connection_info or {}).get('driver_volume_type', '')}
            for a in volume.volume_attachment if a.connector]
        answer = self._shareless({'op': 'release',
                                  'volume': self._volume(volume),
                                  'connector': connector,
                                  'attachments': attachments})
        if answer.get('connector') is None:
            LOG.info('Volume %s: the carrier mapping stays for another '
                     'attachment.', volume.id)
            return True  # a shared connection: no remove_export either
        return super(_Bridge, self).terminate_connection(
            volume, answer['connector'], **kwargs)

    def retype(self, context, volume, new_type, diff, host):
        if self._shareless({'op': 'retype',
                            'volume': self._volume(volume),
                            'diff': diff}).get('retyped'):
            LOG.info('Volume %s: retyped to %s without moving data.',
                     volume.id, new_type['name'])
            return True
        return super(_Bridge, self).retype(context, volume, new_type, diff,
                                           host)


def TransportBridgeDriver(*args, **kwargs):
    """The volume_driver of a backend: the wrapped driver with _Bridge.

    Cinder instantiates volume_driver by calling it with the driver's
    keyword arguments; the class to wrap is only known from the backend's
    configuration, so this builds the subclass then.
    """
    configuration = kwargs['configuration']
    configuration.append_config_values(shareless_opts)
    name = configuration.shareless_wrapped_driver
    if not name:
        raise exception.InvalidConfigurationValue(
            option='shareless_wrapped_driver', value=name)
    wrapped = importutils.import_class(name)
    cls = type('Shareless' + wrapped.__name__, (_Bridge, wrapped), {})
    return cls(*args, **kwargs)
