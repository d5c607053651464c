#!/usr/bin/python3
"""The osbox's stand-in for Glance and Neutron, which the tests do not
exercise but Nova calls when it boots and migrates a server: one image
(IMAGE_ID, 1 MiB raw) under /image/v2, and a Neutron under /network/v2.0
that has no resources (servers are created with --nic none). It checks no
token.

With OSBOX_IMAGES naming a JSON list of real images
([{"id", "name", "file", "disk_format", "properties": {...}}]), it also
serves those, with their data (a real nova-compute boots from them), and
lets Nova create and delete the image of a snapshot (no upload).

usage: stand_in.py ADDRESS PORT
"""
import hashlib
import json
import os
import re
import sys
import uuid
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

# Images: id -> (metadata, data file or None).
IMAGES = {IMAGE_ID: (IMAGE, None)}


def load_images(path):
    for d in json.load(open(path)):
        md5, sha = hashlib.md5(), hashlib.sha512()
        with open(d["file"], "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                md5.update(chunk)
                sha.update(chunk)
        size = os.path.getsize(d["file"])
        img = dict(IMAGE, id=d["id"], name=d["name"], checksum=md5.hexdigest(), os_hash_value=sha.hexdigest(),
                   size=size, virtual_size=size, disk_format=d.get("disk_format", "raw"),
                   self="/v2/images/" + d["id"], file="/v2/images/%s/file" % d["id"])
        img.update(d.get("properties", {}))
        IMAGES[d["id"]] = (img, d["file"])


def image_api(environ, method, p, reply, start):
    """Glance's v2 image calls Nova makes: show, download; create and
    delete for a snapshot (which Nova deletes when the snapshot fails)."""
    m = re.match(r"^/v2/images(?:/([0-9a-f-]+))?(/file)?$", p)
    if not m:
        return None
    iid, data = m.group(1), m.group(2)
    if iid is None and method == "POST":
        body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
        iid = body.pop("id", None) or str(uuid.uuid4())
        img = dict(IMAGE, id=iid, status="queued", size=None, virtual_size=None, checksum=None,
                   os_hash_value=None, self="/v2/images/" + iid, file="/v2/images/%s/file" % iid)
        img.update(body)
        IMAGES[iid] = (img, None)
        return reply("201 Created", img)
    if iid not in IMAGES:
        return None
    img, path = IMAGES[iid]
    if data and method == "GET" and path is not None:
        start("200 OK", [("Content-Type", "application/octet-stream"),
                         ("Content-Length", str(img["size"])), ("Content-MD5", img["checksum"])])
        f = open(path, "rb")
        return iter(lambda: f.read(1 << 20), b"")
    if method == "DELETE" and not data:
        del IMAGES[iid]
        start("204 No Content", [])
        return [b""]
    if method == "GET" and not data:
        return reply("200 OK", img)
    return None


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
        if p == "/v2/images" and method == "GET":
            return reply("200 OK", {"images": [i[0] for i in IMAGES.values()], "schema": "/v2/schemas/images",
                                    "first": "/v2/images"})
        r = image_api(environ, method, p, reply, start)
        if r is not None:
            return r
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
    if os.environ.get("OSBOX_IMAGES"):
        load_images(os.environ["OSBOX_IMAGES"])
    make_server(sys.argv[1], int(sys.argv[2]), app, server_class=Server, handler_class=Quiet).serve_forever()
