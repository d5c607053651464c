"""The osbox's Glance stand-in (osbox/stand_in.py) under the client Nova
drives it with, python-glanceclient v2, the way Nova's libvirt driver
snapshots a server and boots one from the snapshot (unshelve): create,
update by JSON patch, upload the data (chunked), show, download (checked
by the client against the image's SHA-512), delete."""
import hashlib
import os
import subprocess
import sys

import pytest

from conftest import ROOT, free_port, need, stop, wait_port

STAND_IN = ROOT / "tox-tests/osbox/stand_in.py"


@pytest.fixture
def glance(tmp_path):
    try:
        from glanceclient import Client
    except ImportError:
        need("python3-glanceclient", False)
    port, data = free_port(), tmp_path / "images"
    data.mkdir()
    log = open(tmp_path / "stand-in.log", "wb")
    proc = subprocess.Popen([sys.executable, str(STAND_IN), "127.0.0.1", str(port), str(data)],
                            stdout=log, stderr=log, start_new_session=True)
    try:
        wait_port(port, 30, proc)
        yield Client("2", endpoint=f"http://127.0.0.1:{port}/image", token="no token checked"), data
    finally:
        stop(proc)
        log.close()


def test_snapshot_upload_and_boot_download(glance):
    from glanceclient import exc

    client, data_dir = glance
    # 3 MiB and an odd tail: glanceclient streams a file in 64 KiB chunks
    data = os.urandom((3 << 20) + 12345)
    src = data_dir.parent / "snapshot.raw"
    src.write_bytes(data)

    img = client.images.create(name="snap", image_type="snapshot", kernel_id="k", min_disk=1)
    assert img["status"] == "queued" and img["size"] is None
    img = client.images.update(img["id"], remove_props=["kernel_id"], disk_format="raw",
                               container_format="bare", image_location="snapshot")
    assert "kernel_id" not in img and img["image_location"] == "snapshot" and img["image_type"] == "snapshot"

    with open(src, "rb") as f:
        client.images.upload(img["id"], f)
    img = client.images.get(img["id"])
    assert img["status"] == "active" and img["size"] == len(data) and img["disk_format"] == "raw"
    assert img["checksum"] == hashlib.md5(data).hexdigest()
    assert img["os_hash_algo"] == "sha512" and img["os_hash_value"] == hashlib.sha512(data).hexdigest()
    stored = data_dir / img["id"]
    assert stored.read_bytes() == data

    # the client checks the download against os_hash_value
    assert b"".join(client.images.data(img["id"])) == data

    client.images.delete(img["id"])
    assert not stored.exists()
    with pytest.raises(exc.HTTPNotFound):
        client.images.get(img["id"])
