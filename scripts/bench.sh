#!/usr/bin/env bash
# Runs every benchmark suite: each measures shareless and the named peer in
# the same run and prints `bench <suite>/<case>: ours=... <peer>=... ratio=...`.
set -euo pipefail
cd "$(dirname "$0")/.."
for b in scripts/bench-*.sh; do
	[ -e "$b" ] || continue
	echo "== $b"
	"$b"
done
