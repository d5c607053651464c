#!/usr/bin/python3
"""The osbox's test stand-in for Glance and Neutron, which Nova calls
when it boots, migrates, snapshots and shelves a server. It serves one
image (IMAGE_ID, 1 MiB raw, no data) under /image/v2, and a Neutron under
/network/v2.0 that has no resources (servers are created with --nic
none). It checks no token and keeps its images in memory.

With OSBOX_IMAGES naming a JSON list of real images
([{"id", "name", "file", "disk_format", "properties": {...}}]), it also
serves those, with their data (a real nova-compute boots from them). The
image of a snapshot goes through Glance v2 as Nova's glanceclient drives
it: created queued (POST), its attributes changed by a JSON patch (PATCH),
its data uploaded (PUT .../file, chunked), which makes it active with the
size and checksums of that data; a server boots from it (unshelve) like
from any other. Uploaded data is a file named by the image's id in
DATA_DIR, deleted with the image.

usage: stand_in.py ADDRESS PORT DATA_DIR
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

# Images: id -> (metadata, data file or None). DATA_DIR holds the data
# uploaded to the stand-in (main sets it).
IMAGES = {IMAGE_ID: (IMAGE, None)}
DATA_DIR = None


def activate(img, chunks, out=None):
    """img, active with the data that chunks yield (and write to out): its
    size, and the digests glanceclient checks a download against."""
    md5, sha, size = hashlib.md5(), hashlib.sha512(), 0
    for chunk in chunks:
        md5.update(chunk)
        sha.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return dict(img, status="active", size=size, virtual_size=size, checksum=md5.hexdigest(),
                os_hash_algo="sha512", os_hash_value=sha.hexdigest())


def load_images(path):
    for d in json.load(open(path)):
        img = dict(IMAGE, id=d["id"], name=d["name"], disk_format=d.get("disk_format", "raw"),
                   self="/v2/images/" + d["id"], file="/v2/images/%s/file" % d["id"])
        img.update(d.get("properties", {}))
        with open(d["file"], "rb") as f:
            IMAGES[d["id"]] = (activate(img, iter(lambda: f.read(1 << 20), b"")), d["file"])


def body(environ):
    """The request's body in chunks: Content-Length bytes, or the chunked
    transfer coding glanceclient streams an upload in (wsgiref passes it
    on as it came)."""
    src = environ["wsgi.input"]
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        while size := int(src.readline().split(b";")[0], 16):
            yield from read(src, size)
            src.readline()  # the CRLF that ends the chunk
        while src.readline().strip():  # trailers, up to the blank line
            pass
    else:
        yield from read(src, int(environ.get("CONTENT_LENGTH") or 0))


def read(src, size):
    while size > 0:
        chunk = src.read(min(size, 1 << 20))
        if not chunk:
            raise ValueError("the request's body ends early")
        size -= len(chunk)
        yield chunk


def image_api(environ, method, p, reply, start):
    """Glance's v2 image calls Nova and the openstack CLI make: show,
    download; and for a snapshot create, update (a JSON patch), upload and
    delete."""
    m = re.match(r"^/v2/images(?:/([0-9a-f-]+))?(/file)?$", p)
    if not m:
        return None
    iid, data = m.group(1), m.group(2)
    if iid is None and method == "POST":
        meta = json.loads(b"".join(body(environ)) or b"{}")
        iid = meta.pop("id", None) or str(uuid.uuid4())
        img = dict(IMAGE, id=iid, status="queued", size=None, virtual_size=None, checksum=None,
                   os_hash_value=None, self="/v2/images/" + iid, file="/v2/images/%s/file" % iid)
        img.update(meta)
        IMAGES[iid] = (img, None)
        return reply("201 Created", img)
    if iid not in IMAGES:
        return None
    img, path = IMAGES[iid]
    if data and method == "GET" and path is not None:
        start("200 OK", [("Content-Type", "application/octet-stream"),
                         ("Content-Length", str(img["size"])), ("Content-MD5", img["checksum"])])
        return environ["wsgi.file_wrapper"](open(path, "rb"), 1 << 20)
    if data and method == "PUT":
        path = os.path.join(DATA_DIR, iid)
        with open(path, "wb") as out:
            IMAGES[iid] = (activate(img, body(environ), out), path)
        start("204 No Content", [])
        return [b""]
    if method == "PATCH" and not data:
        img = dict(img)
        for op in json.loads(b"".join(body(environ))):
            key = op["path"][1:].replace("~1", "/").replace("~0", "~")
            if op["op"] in ("add", "replace"):
                img[key] = op["value"]
            elif op["op"] == "remove":
                img.pop(key, None)
            else:
                return reply("400 Bad Request", {"message": "unsupported patch operation %r" % op["op"]})
        IMAGES[iid] = (img, path)
        return reply("200 OK", img)
    if method == "DELETE" and not data:
        del IMAGES[iid]
        if path == os.path.join(DATA_DIR, iid):
            os.remove(path)
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
    # plain text, as Glance answers: glanceclient reads a JSON error body
    # as {kind: {"message": ...}}
    start("404 Not Found", [("Content-Type", "text/plain")])
    return [b"404 Not Found\n\nThe resource could not be found.\n"]


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


if __name__ == "__main__":
    DATA_DIR = sys.argv[3]
    if os.environ.get("OSBOX_IMAGES"):
        load_images(os.environ["OSBOX_IMAGES"])
    make_server(sys.argv[1], int(sys.argv[2]), app, server_class=Server, handler_class=Quiet).serve_forever()
