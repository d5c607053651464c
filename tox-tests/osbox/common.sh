# shellcheck shell=bash
# Sourced by up.sh, down.sh and openstack: the parameters of one osbox
# (documented at the top of up.sh) and every name derived from them, so
# that several osboxes run side by side on one machine.

# shellcheck disable=SC2034 # used by the scripts that source this
OSBOX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OSBOX_DIR=${OSBOX_DIR:-$OSBOX_ROOT/.work/osbox}
OSBOX_DIR=$(realpath -m "$OSBOX_DIR")
# Names that must be unique per osbox derive from its state directory.
osbox_id=$(printf %s "$OSBOX_DIR" | sha1sum | cut -c1-8)
OSBOX_NETNS=${OSBOX_NETNS:-osbox-$osbox_id}
OSBOX_IP=${OSBOX_IP:-127.0.0.1}
OSBOX_PREFIX=${OSBOX_PREFIX:-24}
OSBOX_BRIDGE=${OSBOX_BRIDGE:-}
OSBOX_BRIDGE_NETNS=${OSBOX_BRIDGE_NETNS:-}
# The veth pair into the bridge (15 characters at most), named after the
# netns so that two osboxes never share one.
osbox_veth=ob$(printf %s "$OSBOX_NETNS" | sha1sum | cut -c1-8)
OSBOX_VETH_INSIDE=${osbox_veth}i
OSBOX_VETH_BRIDGE=${osbox_veth}b
