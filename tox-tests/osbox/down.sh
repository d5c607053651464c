#!/usr/bin/env bash
# down.sh: stops the osbox of OSBOX_DIR (or OSBOX_NETNS; see up.sh) and
# deletes its network namespace. Every process of the osbox runs in that
# netns, so `ip netns pids` names exactly them: nothing else is touched.
# The state directory stays, with its logs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tox-tests/osbox/common.sh
. "$here/common.sh"
ns=$OSBOX_NETNS
ip netns list | grep -qx "$ns\( (id: [0-9]*)\)\?" || exit 0
pids() { ip netns pids "$ns" 2>/dev/null || true; }
# shellcheck disable=SC2046 # one argument per pid
if [[ -n $(pids) ]]; then
	kill -TERM $(pids) 2>/dev/null || true
	for _ in $(seq 50); do
		[[ -z $(pids) ]] && break
		sleep 0.2
	done
	[[ -z $(pids) ]] || kill -KILL $(pids) 2>/dev/null || true
	for _ in $(seq 25); do
		[[ -z $(pids) ]] && break
		sleep 0.2
	done
fi
# Deleting the netns deletes the veth pair into the bridge with it.
ip netns delete "$ns"
rm -f "$OSBOX_DIR"/pids/*.pid
echo "osbox: $ns stopped"
