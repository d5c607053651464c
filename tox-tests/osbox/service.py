#!/usr/bin/python3
"""Runs one OpenStack service from Debian's python3-* packages, which ship
the code but not the /usr/bin entry points of the daemon packages (those
want dbconfig, systemd and /etc/<service>, which the osbox does not use).

usage: service.py NAME [ARGS...]
  nova-api nova-conductor nova-scheduler nova-compute nova-manage
  cinder-api cinder-scheduler cinder-volume cinder-manage
      the service's own main() with ARGS (--config-file ...)
  wsgi APP ADDRESS PORT
      APP (keystone or placement) served by a threaded wsgiref server;
      its configuration comes from the environment (OS_KEYSTONE_CONFIG_FILES,
      OS_PLACEMENT_CONFIG_DIR)
"""
import importlib
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

WSGI_APPS = {
    "keystone": ("keystone.server.wsgi", "initialize_public_application"),
    "placement": ("placement.wsgi", "init_application"),
}


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class Handler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))


def serve_wsgi(app, address, port):
    module, factory = WSGI_APPS[app]
    sys.argv = [app]  # the factories parse sys.argv as oslo.config arguments
    application = getattr(importlib.import_module(module), factory)()
    server = make_server(address, int(port), application, server_class=ThreadingServer, handler_class=Handler)
    sys.stderr.write("%s serving on %s:%s\n" % (app, address, port))
    sys.stderr.flush()
    server.serve_forever()


def cinder_context_fix():
    """Debian bookworm's oslo.messaging 14 notifier drops read_deleted from
    the context it hands to cinder's RequestContext.from_dict, which
    refuses None: every Cinder notification would raise. Cinder's own
    default is 'no'."""
    import cinder.context as ctx

    from_dict = ctx.RequestContext.from_dict.__func__

    def patched(cls, values):
        if values.get("read_deleted") is None:
            values = dict(values, read_deleted="no")
        return from_dict(cls, values)

    ctx.RequestContext.from_dict = classmethod(patched)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    name = sys.argv[1]
    if name == "wsgi":
        serve_wsgi(*sys.argv[2:5])
        return 0
    project, _, cmd = name.partition("-")
    if project not in ("nova", "cinder") or not cmd:
        sys.exit("unknown service %r\n%s" % (name, __doc__))
    sys.argv = [name] + sys.argv[2:]
    # Importing <project>.cmd.<cmd> monkey-patches eventlet first.
    module = importlib.import_module("%s.cmd.%s" % (project, cmd))
    if project == "cinder":
        cinder_context_fix()
    return module.main()


if __name__ == "__main__":
    sys.exit(main())
