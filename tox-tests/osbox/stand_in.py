#!/usr/bin/python3
"""The osbox's stand-in for Glance and Neutron, which the tests do not
exercise but Nova calls when it boots and migrates a server: one image
(IMAGE_ID, 1 MiB raw) under /image/v2, and a Neutron under /network/v2.0
that has no resources (servers are created with --nic none). It checks no
token.

usage: stand_in.py ADDRESS PORT
"""
import json
import re
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

IMAGE_ID = "11111111-2222-3333-4444-555555555555"
IMAGE = {
    "id": IMAGE_ID, "name": "osbox-image", "status": "active", "visibility": "public",
    "protected": False, "os_hidden": False, "checksum": "d41d8cd98f00b204e9800998ecf8427e",
    "os_hash_algo": "sha512", "os_hash_value": "0" * 128, "owner": None,
    "size": 1 << 20, "virtual_size": 1 << 20, "container_format": "bare", "disk_format": "raw",
    "min_ram": 0, "min_disk": 0, "tags": [],
    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    "self": "/v2/images/" + IMAGE_ID, "file": "/v2/images/%s/file" % IMAGE_ID, "schema": "/v2/schemas/image",
}
# glanceclient validates images against this schema.
SCHEMA = {
    "name": "image",
    "properties": {k: {} for k in list(IMAGE) + ["direct_url", "locations"]},
    "additionalProperties": {"type": "string"},
    "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
              {"rel": "describedby", "href": "{schema}"}],
}


def app(environ, start):
    path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
    base = "http://%s" % environ["HTTP_HOST"]

    def reply(status, body):
        data = json.dumps(body).encode()
        start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    if path.startswith("/image"):
        p = path[len("/image"):]
        if p in ("", "/"):
            return reply("300 Multiple Choices", {"versions": [
                {"id": "v2.16", "status": "CURRENT", "links": [{"rel": "self", "href": base + "/image/v2/"}]}]})
        if p.startswith("/v2/schemas/image"):
            return reply("200 OK", SCHEMA)
        if p == "/v2/images/" + IMAGE_ID:
            return reply("200 OK", IMAGE)
        if p == "/v2/images" and method == "GET":
            return reply("200 OK", {"images": [IMAGE], "schema": "/v2/schemas/images", "first": "/v2/images"})
    elif path.startswith("/network"):
        p = re.sub(r"\.json$", "", path[len("/network"):])
        if p in ("", "/"):
            return reply("200 OK", {"versions": [
                {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": base + "/network/v2.0/"}]}]})
        m = re.match(r"^/v2\.0/([a-z-]+)$", p)
        if m and method == "GET":
            return reply("200 OK", {m.group(1).replace("-", "_"): []})
        return reply("404 Not Found", {"NeutronError": {"type": "NotFound", "message": "%s %s" % (method, p), "detail": ""}})
    return reply("404 Not Found", {"message": "not found", "code": 404})


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


if __name__ == "__main__":
    make_server(sys.argv[1], int(sys.argv[2]), app, server_class=Server, handler_class=Quiet).serve_forever()
