#!/usr/bin/python3
"""Aborts the live migration of a server as soon as Nova runs it, as
`nova live-migration-abort SERVER MIGRATION` does: python-novaclient's
server_migrations, i.e. GET /servers/{id}/migrations and DELETE
/servers/{id}/migrations/{migration}, as admin (the OS_* environment).
The osbox's fake.FakeLiveMigrateDriver keeps a live migration running for
5 s unless it is aborted or forced to complete; polling from a process
that is already connected catches that window, where a CLI that starts
after the migration (about 2 s of Python start-up on this machine) might not.

usage: abort_live_migration.py SERVER_ID TIMEOUT   (inside the osbox's netns)
Prints one JSON line: the migration and when it was seen running and aborted.
"""
import json
import os
import sys
import time

from keystoneauth1 import loading, session
from novaclient import client

server, timeout = sys.argv[1], float(sys.argv[2])
auth = loading.get_plugin_loader("password").load_from_options(
    auth_url=os.environ["OS_AUTH_URL"], username=os.environ["OS_USERNAME"], password=os.environ["OS_PASSWORD"],
    project_name=os.environ["OS_PROJECT_NAME"], user_domain_name=os.environ["OS_USER_DOMAIN_NAME"],
    project_domain_name=os.environ["OS_PROJECT_DOMAIN_NAME"])
nova = client.Client("2.90", session=session.Session(auth=auth))
t0 = time.monotonic()
while True:
    running = [m for m in nova.server_migrations.list(server) if m.status == "running"]
    if running:
        break
    if time.monotonic() - t0 > timeout:
        sys.exit("no running live migration of %s after %s s" % (server, timeout))
    time.sleep(0.1)
seen = time.monotonic() - t0
nova.server_migrations.live_migration_abort(server, running[0].id)
print(json.dumps({"migration": running[0].id, "running_after": round(seen, 2),
                  "aborted_after": round(time.monotonic() - t0, 2)}))
