#!/usr/bin/env bash
# up.sh: an OpenStack Zed control plane from Debian bookworm's packages in
# a network namespace of its own (the osbox): MariaDB, RabbitMQ, Keystone,
# Placement, Nova (API, conductor, scheduler and N nova-compute with the
# virt driver fake.FakeLiveMigrateDriver, hosts compute1..N), Cinder (API,
# scheduler, volume; the fake volume driver by default) and a stand-in for
# Glance and Neutron (stand_in.py, a test stand-in). Real Nova
# sends its real versioned notifications on the osbox's RabbitMQ.
#
# Run as root; scripts/deps.sh installs the packages. It stops an osbox
# already running on the same OSBOX_DIR first; down.sh stops it.
#
# Parameters (environment):
#   OSBOX_DIR           state directory: configuration, databases, logs
#                       (default: <repo>/.work/osbox)
#   OSBOX_NETNS         network namespace of the services (default:
#                       osbox-<hash of OSBOX_DIR>); several osboxes with
#                       different OSBOX_DIR run side by side
#   OSBOX_IP            address of every service (default 127.0.0.1, the
#                       netns' own loopback: reachable only inside it)
#   OSBOX_BRIDGE        when set, a veth pair joins the netns to this
#                       bridge, OSBOX_IP/OSBOX_PREFIX (default 24) on the
#                       netns' end, so that other namespaces on the bridge
#                       reach the services (RabbitMQ, the APIs) at OSBOX_IP
#   OSBOX_BRIDGE_NETNS  netns the bridge lives in (default: the host's)
#   OSBOX_COMPUTES      number of fake nova-computes, compute1..N (default 2;
#                       0 for none, e.g. when real ones join from elsewhere)
#   OSBOX_COMPUTE_IPS   my_ip of each fake compute, space-separated, what
#                       Nova reports as the hypervisor's host_ip (default:
#                       OSBOX_IP for all)
#   OSBOX_NOVA_CONF     extra nova.conf files (space-separated), given to
#                       every Nova service after the osbox's own (they win)
#   OSBOX_CINDER        1 (default) runs Cinder, 0 does not
#   OSBOX_CINDER_BACKENDS  Cinder's enabled_backends (default "fake": the
#                       fake volume driver that ships in python3-cinder);
#                       define any other backend's section in OSBOX_CINDER_CONF
#   OSBOX_CINDER_CONF   extra cinder.conf files (space-separated), given to
#                       every Cinder service after the osbox's own
#   OSBOX_IMAGES        JSON list of real images the Glance stand-in serves
#                       with their data, for a real nova-compute to boot
#                       ([{"id", "name", "file", "disk_format",
#                       "properties"}], see stand_in.py)
#   OSBOX_PYTHONPATH    prepended to every service's PYTHONPATH (a volume
#                       driver of one's own, for example)
#
# What it leaves in OSBOX_DIR:
#   env.sh              OSBOX_NETNS, OSBOX_IP, OSBOX_TRANSPORT_URL and the
#                       admin credentials (OS_*); `openstack` (next to this
#                       script) runs the CLI inside the netns with them
#   etc/nova/nova.conf  what every Nova service reads (no database: a
#                       nova-compute started elsewhere uses it as is, plus
#                       its own [DEFAULT] host/compute_driver file; the
#                       scheduler maps new computes to the cell within 5 s)
#   etc/nova/nova-db.conf, etc/nova/computeN.conf, etc/cinder/cinder.conf
#   logs/<service>.log, pids/<service>.pid
#   images/<id>         the data of the images uploaded to the Glance
#                       stand-in (a server's snapshot), until deleted
#
# Ports inside the netns: MariaDB 3306 (127.0.0.1), RabbitMQ 5672 (guest/
# guest), Keystone 5000 (admin/admin), Nova 8774, Placement 8778, Cinder
# 8776, stand-in 9292. Each service user's password is its name.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tox-tests/osbox/common.sh
. "$here/common.sh"
OSBOX_COMPUTES=${OSBOX_COMPUTES:-2}
OSBOX_COMPUTE_IPS=${OSBOX_COMPUTE_IPS:-}
OSBOX_NOVA_CONF=${OSBOX_NOVA_CONF:-}
OSBOX_CINDER=${OSBOX_CINDER:-1}
OSBOX_CINDER_BACKENDS=${OSBOX_CINDER_BACKENDS:-fake}
OSBOX_CINDER_CONF=${OSBOX_CINDER_CONF:-}
OSBOX_PYTHONPATH=${OSBOX_PYTHONPATH:-}
PY=/usr/bin/python3 # Debian's interpreter, with the OpenStack packages
B=$OSBOX_DIR
IP=$OSBOX_IP
NS=(ip netns exec "$OSBOX_NETNS")

t0=$EPOCHREALTIME
ts() { printf 'osbox: [%6.1fs] %s\n' "$(echo "$EPOCHREALTIME - $t0" | bc)" "$*"; }

[[ $OSBOX_COMPUTES =~ ^[0-9]+$ ]] || { echo "osbox: OSBOX_COMPUTES=$OSBOX_COMPUTES is not a number" >&2; exit 2; }
if [[ -n $OSBOX_BRIDGE && $IP == 127.* ]]; then
	echo "osbox: OSBOX_BRIDGE needs an OSBOX_IP that is not loopback" >&2
	exit 2
fi
for f in $OSBOX_NOVA_CONF $OSBOX_CINDER_CONF; do
	[[ -r $f ]] || { echo "osbox: extra configuration $f is not readable" >&2; exit 2; }
done
for c in mariadb-install-db /usr/sbin/mariadbd /usr/lib/rabbitmq/bin/rabbitmq-server keystone-manage placement-manage openstack bc; do
	command -v "$c" >/dev/null || { echo "osbox: $c missing (scripts/deps.sh installs it)" >&2; exit 3; }
done
"$PY" -c 'import nova, cinder, keystone, placement, keystoneclient' 2>/dev/null ||
	{ echo "osbox: Debian's python3-nova/-cinder/-keystone/-placement missing (scripts/deps.sh)" >&2; exit 3; }

failed() {
	echo "osbox: FAILED (logs in $B/logs; $here/down.sh stops what started)" >&2
	for l in "$B"/logs/*.log; do
		[[ -s $l ]] && grep -qiE 'error|traceback|exception' "$l" && { echo "--- $l" >&2; tail -n 15 "$l" >&2; }
	done
	return 0
}
trap failed ERR

OSBOX_DIR=$B OSBOX_NETNS=$OSBOX_NETNS "$here/down.sh" >/dev/null
rm -rf "${B:?}"/{mysql,rabbitmq,state,logs,pids,etc,images}
mkdir -p "$B"/{mysql,rabbitmq/home,rabbitmq/mnesia,rabbitmq/log,state/nova,state/cinder,logs,pids,images} \
	"$B"/etc/{keystone,placement,nova,cinder}

ip netns add "$OSBOX_NETNS"
"${NS[@]}" ip link set lo up
if [[ -n $OSBOX_BRIDGE ]]; then
	brns=()
	[[ -n $OSBOX_BRIDGE_NETNS ]] && brns=(netns "$OSBOX_BRIDGE_NETNS")
	ip link add "$OSBOX_VETH_INSIDE" netns "$OSBOX_NETNS" type veth peer name "$OSBOX_VETH_BRIDGE" "${brns[@]}"
	brip=(ip)
	[[ -n $OSBOX_BRIDGE_NETNS ]] && brip=(ip -n "$OSBOX_BRIDGE_NETNS")
	"${brip[@]}" link set "$OSBOX_VETH_BRIDGE" master "$OSBOX_BRIDGE" up
	"${NS[@]}" ip addr add "$IP/$OSBOX_PREFIX" dev "$OSBOX_VETH_INSIDE"
	"${NS[@]}" ip link set "$OSBOX_VETH_INSIDE" up
fi
ts "netns $OSBOX_NETNS, services on $IP${OSBOX_BRIDGE:+ (bridge $OSBOX_BRIDGE)}"

# start NAME CMD...: CMD in the netns, in a session of its own, logging to
# logs/NAME.log; down.sh stops every process of the netns.
start() {
	local name=$1
	shift
	"${NS[@]}" env PYTHONPATH="$OSBOX_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}" setsid "$@" \
		>>"$B/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$B/pids/$name.pid"
}

# wait_port NAME ADDR PORT TIMEOUT: until ADDR:PORT accepts a connection;
# fails early if NAME's process died.
wait_port() {
	local name=$1 addr=$2 port=$3 deadline=$((SECONDS + $4))
	until "${NS[@]}" bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null; do
		if ! kill -0 "$(cat "$B/pids/$name.pid")" 2>/dev/null; then
			echo "osbox: $name exited before $addr:$port opened" >&2
			return 1
		fi
		if ((SECONDS > deadline)); then
			echo "osbox: $name: $addr:$port not open after $4 s" >&2
			return 1
		fi
		sleep 0.2
	done
}

############ MariaDB: only the netns' services use it, on 127.0.0.1 ############
cat >"$B/mysql/my.cnf" <<EOF
[mysqld]
user = root
datadir = $B/mysql/data
socket = $B/mysql/mysqld.sock
pid-file = $B/mysql/mysqld.pid
bind-address = 127.0.0.1
port = 3306
skip-name-resolve
max_connections = 1000
innodb_buffer_pool_size = 128M
# a test cloud: durability traded for speed
innodb_flush_log_at_trx_commit = 0
innodb_doublewrite = 0
sync_binlog = 0
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
log-error = $B/logs/mariadb.log
[client]
socket = $B/mysql/mysqld.sock
EOF
sql() { mariadb --defaults-file="$B/mysql/my.cnf" -uroot "$@"; }
mariadb-install-db --defaults-file="$B/mysql/my.cnf" --auth-root-authentication-method=normal \
	--skip-test-db >"$B/logs/mariadb-install.log" 2>&1
start mariadb /usr/sbin/mariadbd --defaults-file="$B/mysql/my.cnf"

############ RabbitMQ: its own node, cookie, mnesia and epmd in the netns ############
: >"$B/rabbitmq/rabbitmq-env.conf" # not /etc/rabbitmq's
printf 'listeners.tcp.default = 5672\nloopback_users = none\n' >"$B/rabbitmq/rabbitmq.conf"
echo '[].' >"$B/rabbitmq/enabled_plugins"
# The server script itself, as root: the /usr/sbin wrapper would switch to
# the rabbitmq user and /var/lib/rabbitmq.
start rabbitmq env HOME="$B/rabbitmq/home" \
	RABBITMQ_CONF_ENV_FILE="$B/rabbitmq/rabbitmq-env.conf" RABBITMQ_CONFIG_FILE="$B/rabbitmq/rabbitmq.conf" \
	RABBITMQ_ENABLED_PLUGINS_FILE="$B/rabbitmq/enabled_plugins" RABBITMQ_MNESIA_BASE="$B/rabbitmq/mnesia" \
	RABBITMQ_LOG_BASE="$B/rabbitmq/log" RABBITMQ_PID_FILE="$B/rabbitmq/rabbit.pid" \
	RABBITMQ_NODENAME=rabbit@localhost /usr/lib/rabbitmq/bin/rabbitmq-server

wait_port mariadb 127.0.0.1 3306 60
ts "mariadb up"
sql <<'EOF'
CREATE DATABASE keystone; CREATE DATABASE placement; CREATE DATABASE nova_api;
CREATE DATABASE nova; CREATE DATABASE nova_cell0; CREATE DATABASE cinder;
CREATE USER 'openstack'@'127.0.0.1' IDENTIFIED BY 'openstack';
GRANT ALL PRIVILEGES ON *.* TO 'openstack'@'127.0.0.1';
EOF
DB=mysql+pymysql://openstack:openstack@127.0.0.1
TRANSPORT=rabbit://guest:guest@$IP:5672/

############ configuration ############
AUTH="auth_type = password
auth_url = http://$IP:5000/v3
project_domain_name = Default
user_domain_name = Default
project_name = service
region_name = RegionOne"
AUTHTOKEN="www_authenticate_uri = http://$IP:5000/
auth_url = http://$IP:5000/
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service"

cat >"$B/etc/keystone/keystone.conf" <<EOF
[database]
connection = $DB/keystone
[token]
provider = fernet
[fernet_tokens]
key_repository = $B/etc/keystone/fernet-keys
[credential]
key_repository = $B/etc/keystone/credential-keys
[identity]
# a test cloud: cheap password hashing
password_hash_rounds = 4
[cache]
enabled = true
backend = dogpile.cache.memory
EOF

cat >"$B/etc/placement/placement.conf" <<EOF
[api]
auth_strategy = keystone
[placement_database]
connection = $DB/placement
[keystone_authtoken]
$AUTHTOKEN
username = placement
password = placement
EOF

cat >"$B/etc/nova/nova.conf" <<EOF
[DEFAULT]
use_stderr = true
transport_url = $TRANSPORT
my_ip = $IP
host = controller
state_path = $B/state/nova
enabled_apis = osapi_compute
osapi_compute_listen = $IP
osapi_compute_listen_port = 8774
osapi_compute_workers = 1
[wsgi]
api_paste_config = $here/etc/nova-api-paste.ini
[api]
auth_strategy = keystone
[conductor]
workers = 1
[scheduler]
workers = 1
# maps computes that register later (also from other namespaces) to cell1
discover_hosts_in_cells_interval = 5
[keystone_authtoken]
$AUTHTOKEN
username = nova
password = nova
[service_user]
# Debian's Cinder lets only a service delete an in-use attachment, which
# Nova does at the end of every live migration of a server with volumes
send_service_user_token = true
$AUTH
username = nova
password = nova
[placement]
$AUTH
username = placement
password = placement
[neutron]
$AUTH
username = neutron
password = neutron
endpoint_override = http://$IP:9292/network
[glance]
$AUTH
username = glance
password = glance
endpoint_override = http://$IP:9292/image
[cinder]
$AUTH
username = cinder
password = cinder
os_region_name = RegionOne
catalog_info = volumev3:cinderv3:publicURL
[oslo_concurrency]
lock_path = $B/state/nova/lock
[oslo_messaging_notifications]
driver = messagingv2
[notifications]
notification_format = versioned
notify_on_state_change = vm_and_task_state
[compute]
live_migration_wait_for_vif_plug = false
[vnc]
enabled = false
EOF
cat >"$B/etc/nova/nova-db.conf" <<EOF
# nova-api, -conductor, -scheduler and nova-manage only
[api_database]
connection = $DB/nova_api
[database]
connection = $DB/nova
EOF
read -ra compute_ips <<<"$OSBOX_COMPUTE_IPS"
for ((n = 1; n <= OSBOX_COMPUTES; n++)); do
	mkdir -p "$B/state/compute$n"
	cat >"$B/etc/nova/compute$n.conf" <<EOF
[DEFAULT]
host = compute$n
my_ip = ${compute_ips[n - 1]:-$IP}
compute_driver = fake.FakeLiveMigrateDriver
state_path = $B/state/compute$n
instances_path = $B/state/compute$n/instances
[oslo_concurrency]
lock_path = $B/state/compute$n/lock
EOF
done

cat >"$B/etc/cinder/cinder.conf" <<EOF
[DEFAULT]
use_stderr = true
transport_url = $TRANSPORT
auth_strategy = keystone
my_ip = $IP
host = cinder
state_path = $B/state/cinder
osapi_volume_listen = $IP
osapi_volume_listen_port = 8776
osapi_volume_workers = 1
api_paste_config = $here/etc/cinder-api-paste.ini
resource_query_filters_file = $here/etc/cinder-resource-filters.json
enabled_backends = $OSBOX_CINDER_BACKENDS
[database]
connection = $DB/cinder
[keystone_authtoken]
$AUTHTOKEN
username = cinder
password = cinder
service_token_roles = service
service_token_roles_required = true
[nova]
$AUTH
username = nova
password = nova
[oslo_concurrency]
lock_path = $B/state/cinder/lock
[oslo_messaging_notifications]
driver = messagingv2
EOF
if [[ ,$OSBOX_CINDER_BACKENDS, == *,fake,* ]]; then
	cat >>"$B/etc/cinder/cinder.conf" <<'EOF'
[fake]
# ships in python3-cinder: records the calls, needs no storage
volume_driver = cinder.tests.fake_driver.FakeLoggingVolumeDriver
volume_backend_name = fake
EOF
fi

cat >"$B/env.sh" <<EOF
# the osbox of $B (written by up.sh)
export OSBOX_DIR=$B
export OSBOX_NETNS=$OSBOX_NETNS
export OSBOX_IP=$IP
export OSBOX_TRANSPORT_URL=$TRANSPORT
export OS_AUTH_URL=http://$IP:5000/v3
export OS_USERNAME=admin
export OS_PASSWORD=admin
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_IDENTITY_API_VERSION=3
export OS_REGION_NAME=RegionOne
export OS_COMPUTE_API_VERSION=2.90
export OS_VOLUME_API_VERSION=3.27
EOF
ts "configuration written"

nova_conf=(--config-file "$B/etc/nova/nova.conf")
for f in $OSBOX_NOVA_CONF; do nova_conf+=(--config-file "$f"); done
cinder_conf=(--config-file "$B/etc/cinder/cinder.conf")
for f in $OSBOX_CINDER_CONF; do cinder_conf+=(--config-file "$f"); done
nova_db=("${nova_conf[@]}" --config-file "$B/etc/nova/nova-db.conf")

############ schemas, in parallel ############
ksm=("${NS[@]}" keystone-manage --config-file "$B/etc/keystone/keystone.conf")
(
	"${ksm[@]}" db_sync
	"${ksm[@]}" fernet_setup --keystone-user root --keystone-group root
	"${ksm[@]}" credential_setup --keystone-user root --keystone-group root
	"${ksm[@]}" bootstrap --bootstrap-password admin --bootstrap-region-id RegionOne \
		--bootstrap-admin-url "http://$IP:5000/v3/" --bootstrap-internal-url "http://$IP:5000/v3/" \
		--bootstrap-public-url "http://$IP:5000/v3/"
) >"$B/logs/keystone-manage.log" 2>&1 &
p_keystone=$!
"${NS[@]}" placement-manage --config-file "$B/etc/placement/placement.conf" db sync >"$B/logs/placement-manage.log" 2>&1 &
p_placement=$!
nm=("${NS[@]}" "$PY" "$here/service.py" nova-manage "${nova_db[@]}")
(
	"${nm[@]}" api_db sync
	"${nm[@]}" cell_v2 map_cell0 --database_connection "$DB/nova_cell0"
	"${nm[@]}" cell_v2 create_cell --name=cell1
	"${nm[@]}" db sync
) >"$B/logs/nova-manage.log" 2>&1 &
p_nova=$!
p_cinder=
if [[ $OSBOX_CINDER == 1 ]]; then
	"${NS[@]}" "$PY" "$here/service.py" cinder-manage "${cinder_conf[@]}" db sync >"$B/logs/cinder-manage.log" 2>&1 &
	p_cinder=$!
fi

wait $p_keystone
ts "keystone schema, keys and admin ready"
start keystone env OS_KEYSTONE_CONFIG_FILES="$B/etc/keystone/keystone.conf" "$PY" "$here/service.py" wsgi keystone "$IP" 5000
wait_port keystone "$IP" 5000 60
"${NS[@]}" "$PY" "$here/keystone_setup.py" "$IP" >"$B/logs/keystone-setup.log" 2>&1
ts "keystone up: service users and catalog"
wait $p_placement
wait $p_nova
[[ -z $p_cinder ]] || wait $p_cinder
ts "placement, nova${p_cinder:+, cinder} schemas ready"

wait_port rabbitmq "$IP" 5672 120
ts "rabbitmq up"
start stand-in "$PY" "$here/stand_in.py" "$IP" 9292 "$B/images"
start placement env OS_PLACEMENT_CONFIG_DIR="$B/etc/placement" "$PY" "$here/service.py" wsgi placement "$IP" 8778
for s in nova-api nova-conductor nova-scheduler; do
	start "$s" "$PY" "$here/service.py" "$s" "${nova_db[@]}"
done
for ((n = 1; n <= OSBOX_COMPUTES; n++)); do
	start "nova-compute$n" "$PY" "$here/service.py" nova-compute "${nova_conf[@]}" --config-file "$B/etc/nova/compute$n.conf"
done
if [[ $OSBOX_CINDER == 1 ]]; then
	for s in cinder-api cinder-scheduler cinder-volume; do
		start "$s" "$PY" "$here/service.py" "$s" "${cinder_conf[@]}"
	done
fi
ts "services started"
wait_port placement "$IP" 8778 180
wait_port nova-api "$IP" 8774 180
[[ $OSBOX_CINDER != 1 ]] || wait_port cinder-api "$IP" 8776 180
ts "APIs answer"

# Each compute registers its compute node, then is mapped to cell1.
if ((OSBOX_COMPUTES > 0)); then
	deadline=$((SECONDS + 180))
	until [[ $(sql -N nova -e "select count(*) from compute_nodes where deleted=0") -ge $OSBOX_COMPUTES ]]; do
		((SECONDS < deadline)) || { echo "osbox: $OSBOX_COMPUTES compute nodes not registered after 180 s" >&2; false; }
		sleep 0.5
	done
	"${nm[@]}" cell_v2 discover_hosts >"$B/logs/discover-hosts.log" 2>&1
	ts "$OSBOX_COMPUTES nova-compute registered and mapped"
fi
if [[ $OSBOX_CINDER == 1 ]]; then
	deadline=$((SECONDS + 180))
	until [[ $(sql -N cinder -e "select count(*) from services where topic='cinder-volume' and deleted=0") -ge 1 ]]; do
		((SECONDS < deadline)) || { echo "osbox: cinder-volume not registered after 180 s" >&2; false; }
		sleep 0.5
	done
	ts "cinder-volume registered"
fi
ts "osbox ready: . $B/env.sh; $here/openstack server list"
