#!/usr/bin/env bash
# The post-copy replica against its peers (issue 4): copy rate against
# qemu-img convert, 4 KiB QD32 reads through a copying replica against a
# plain export, and the way back against a full copy. The measuring is in
# `shareless bench replica`; SIZE overrides the 1 GiB disk.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bin/shareless bench replica --size "${SIZE:-1073741824}"
