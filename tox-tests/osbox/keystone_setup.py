#!/usr/bin/python3
"""Creates the osbox's service project, service users and catalog in one
process (what about 25 `openstack user/service/endpoint create` calls do,
in a fraction of the time).

usage: keystone_setup.py ADDRESS   (Keystone on ADDRESS:5000, admin/admin)
Every service user's password is its name.
"""
import sys

from keystoneauth1 import session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client

ip = sys.argv[1]
auth = v3.Password(auth_url="http://%s:5000/v3" % ip, username="admin", password="admin",
                   project_name="admin", user_domain_name="Default", project_domain_name="Default")
ks = client.Client(session=session.Session(auth=auth))
domain = ks.domains.find(name="Default")
project = ks.projects.create("service", domain)
admin = ks.roles.find(name="admin")
# Debian's Cinder lets only a token with the service role delete an in-use
# attachment, which Nova does at the end of every live migration.
service = next(iter(ks.roles.list(name="service")), None) or ks.roles.create("service")
for name in ("nova", "placement", "cinder", "neutron", "glance"):
    user = ks.users.create(name, domain=domain, password=name)
    ks.roles.grant(admin, user=user, project=project)
    ks.roles.grant(service, user=user, project=project)
catalog = [
    ("nova", "compute", "http://%s:8774/v2.1" % ip),
    ("placement", "placement", "http://%s:8778" % ip),
    ("cinderv3", "volumev3", "http://%s:8776/v3/%%(project_id)s" % ip),
    ("cinder", "block-storage", "http://%s:8776/v3/%%(project_id)s" % ip),
    ("glance", "image", "http://%s:9292/image" % ip),
    ("neutron", "network", "http://%s:9292/network" % ip),
]
for name, kind, url in catalog:
    svc = ks.services.create(name, type=kind)
    for interface in ("public", "internal", "admin"):
        ks.endpoints.create(svc, url, interface=interface, region="RegionOne")
print("keystone: service users and catalog created")
