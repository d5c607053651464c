"""Test-only: os-brick's connectors for Nova's fake virt driver.

Nova's fake driver answers every host's volume connector with
{'ip', 'initiator': 'fake', 'host'}: neither what an FC host nor what a
host without an HBA and without an iSCSI initiator sends. Python imports
this module at start-up (it is first on the services' PYTHONPATH); when
nova.virt.fake is imported it makes FakeDriver.get_volume_connector answer
what os_brick.initiator.connector.get_connector_properties returns on such
hosts: platform, os_type, ip, host, multipath, enforce_multipath, and for
the hosts named in SHARELESS_TEST_FC_HOSTS (comma separated) the wwpns and
wwnns of one HBA port (derived from the host name). Other processes are
not affected.
"""
import hashlib
import importlib.abc
import importlib.machinery
import os
import sys


def _port(host, kind):
    return kind + hashlib.sha256(host.encode()).hexdigest()[:14]


def _patch(fake):
    fc_hosts = set(filter(None, os.environ.get('SHARELESS_TEST_FC_HOSTS', '').split(',')))
    fake_connector = fake.FakeDriver.get_volume_connector

    def get_volume_connector(self, instance):
        c = {'platform': 'x86_64', 'os_type': 'linux',
             'ip': fake_connector(self, instance)['ip'], 'host': self._host,
             'multipath': False, 'enforce_multipath': False}
        if self._host in fc_hosts:
            c['wwpns'], c['wwnns'] = [_port(self._host, '10')], [_port(self._host, '20')]
        return c

    fake.FakeDriver.get_volume_connector = get_volume_connector


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != 'nova.virt.fake':
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())
