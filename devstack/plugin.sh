# shellcheck shell=bash
# devstack/plugin.sh: the shareless agent in a devstack.
#
# stack.sh, unstack.sh and clean.sh source this file as
#   plugin.sh stack pre-install|install|post-config|extra|test-config
#   plugin.sh unstack
#   plugin.sh clean
# with devstack's functions (iniset, iniget, run_process, ...) and the
# variables of ./settings defined. It acts only on a host that runs
# nova-compute: the agent is a sidecar of nova-compute and libvirtd.

# Save trace setting
_XTRACE_SHARELESS=$(set +o | grep xtrace)
set +o xtrace

# The Go version the toolchain switch needs: an older go cannot build a
# module that asks for a newer one.
SHARELESS_GO_MIN_MINOR=21

# shareless_go_check dies unless $SHARELESS_GO can build the module.
function shareless_go_check {
    local v minor
    # Outside the module, so that go does not fetch go.mod's toolchain yet.
    v=$(cd / && "$SHARELESS_GO" env GOVERSION 2>/dev/null) ||
        die $LINENO "shareless: '$SHARELESS_GO' not found: install Go 1.$SHARELESS_GO_MIN_MINOR or later, or set SHARELESS_GO"
    minor=${v#go1.}
    minor=${minor%%[!0-9]*}
    if [[ -z $minor ]] || ((minor < SHARELESS_GO_MIN_MINOR)); then
        die $LINENO "shareless: $SHARELESS_GO is $v; Go 1.$SHARELESS_GO_MIN_MINOR or later is needed (it fetches the toolchain go.mod names)"
    fi
}

# install_shareless builds the binary from the clone and installs it with
# the libvirt hook.
function install_shareless {
    local out
    shareless_go_check
    out=$(mktemp -d)
    (cd "$SHARELESS_DIR" && "$SHARELESS_GO" build -o "$out/shareless" ./cmd/shareless) ||
        die $LINENO "shareless: go build failed in $SHARELESS_DIR"
    sudo install -D -m 0755 "$out/shareless" "$SHARELESS_BIN"
    rm -rf "$out"
    install_shareless_hook
}

# install_shareless_hook installs the qemu hook and restarts libvirtd,
# which reads its hooks when it starts. libvirtd runs every script in
# qemu.d with the guest's name, operation, sub-operation and an extra
# argument, the domain XML on stdin.
function install_shareless_hook {
    local tmp
    tmp=$(mktemp)
    {
        echo '#!/bin/sh'
        echo "# shareless's libvirt qemu hook, installed by its devstack plugin."
        echo "# It asks the local agent, never libvirt; see 'shareless help hook'."
        printf 'exec %q hook --socket %q --state-dir %q qemu "$@"\n' \
            "$SHARELESS_BIN" "$SHARELESS_SOCKET" "$SHARELESS_STATE_DIR"
    } >"$tmp"
    sudo install -D -m 0755 "$tmp" "$SHARELESS_LIBVIRT_HOOK_DIR/shareless"
    rm -f "$tmp"
    restart_service "${LIBVIRT_DAEMON:-libvirtd}"
}

# shareless_shared_secret PATH LABEL GIVEN LEN writes a secret every node
# shares to PATH: GIVEN if set; else what PATH holds already (the
# operator's); else LEN hex digits derived from SERVICE_PASSWORD, which is
# the same on every node.
function shareless_shared_secret {
    local path=$1 label=$2 given=$3 len=$4
    if [[ -z $given ]] && sudo test -s "$path"; then
        return
    fi
    if [[ -z $given ]]; then
        given=$(printf 'shareless-%s:%s' "$label" "$SERVICE_PASSWORD" | sha256sum | cut -c1-"$len")
    fi
    shareless_write_secret "$path" "$given"
}

# shareless_write_secret PATH VALUE writes a secret file readable by the
# agent's user only; the mode is set before the secret is written.
function shareless_write_secret {
    local path=$1 value=$2
    sudo install -D -m 0600 -o "$SHARELESS_USER" /dev/null "$path"
    printf '%s\n' "$value" | sudo tee "$path" >/dev/null
}

# configure_shareless writes $SHARELESS_CONF_FILE and its secret files from
# devstack's own settings.
function configure_shareless {
    local conf=$SHARELESS_CONF_FILE dir=$SHARELESS_CONF_DIR
    local url host exchange topic durable listen
    local storage_ip=${SHARELESS_STORAGE_IP:-$HOST_IP}
    local api_listen=${SHARELESS_API_LISTEN:-$storage_ip:3270}
    sudo install -d -m 0755 "$dir"
    sudo install -d -m 0700 -o "$SHARELESS_USER" "$SHARELESS_STATE_DIR" "$SHARELESS_STORE_DIR"

    shareless_shared_secret "$SHARELESS_CHAP_SECRET_FILE" chap "$SHARELESS_CHAP_SECRET" 16
    shareless_shared_secret "$SHARELESS_PSK_FILE" psk "$SHARELESS_PSK" 64
    shareless_write_secret "$dir/keystone.password" "$SERVICE_PASSWORD"

    # A fresh file on every stack.sh: options of an earlier run never linger.
    sudo install -m 0644 /dev/null "$conf"
    echo "# Written by shareless's devstack plugin; see etc/shareless.conf.sample." |
        sudo tee "$conf" >/dev/null

    # Nova's name for this host and its notification settings.
    host=$(iniget "$NOVA_CONF" DEFAULT host)
    iniset -sudo "$conf" DEFAULT host "${host:-$(hostname)}"
    iniset -sudo "$conf" DEFAULT state_path "$SHARELESS_STATE_DIR"
    iniset -sudo "$conf" DEFAULT log_level "$SHARELESS_LOG_LEVEL"

    url=$(get_notification_url)
    [[ -n $url ]] || die $LINENO "shareless: no notification transport (is rabbit enabled?)"
    # The password goes to a file of its own when the URL names one host.
    if [[ $url != *@*@* && $url =~ ^([a-z0-9+]+://)([^:/@]+):([^@]*)@(.+)$ ]]; then
        # oslo.messaging percent-decodes the URL's credentials.
        shareless_write_secret "$dir/rabbit.password" "$(printf '%b' "${BASH_REMATCH[3]//%/\\x}")"
        url=${BASH_REMATCH[1]}${BASH_REMATCH[2]}@${BASH_REMATCH[4]}
        iniset -sudo "$conf" amqp password_file "$dir/rabbit.password"
    fi
    iniset -sudo "$conf" amqp transport_url "$url"
    exchange=$(iniget "$NOVA_CONF" DEFAULT control_exchange)
    iniset -sudo "$conf" amqp exchange "${exchange:-nova}"
    durable=$(iniget "$NOVA_CONF" oslo_messaging_rabbit amqp_durable_queues)
    if [[ ${durable,,} == true ]]; then
        iniset -sudo "$conf" amqp exchange_durable true
    fi
    topic=$(iniget "$NOVA_CONF" notifications versioned_notifications_topics)
    topic=${topic%%,*}
    iniset -sudo "$conf" amqp topic "${topic:-versioned_notifications}"

    listen=127.0.0.1
    if [[ -n $storage_ip && $storage_ip != 127.0.0.1 ]]; then
        listen+=",$storage_ip"
    fi
    iniset -sudo "$conf" iscsi listen "$listen"
    iniset -sudo "$conf" iscsi port "$SHARELESS_ISCSI_PORT"
    iniset -sudo "$conf" iscsi chap_user "$SHARELESS_CHAP_USER"
    iniset -sudo "$conf" iscsi chap_secret_file "$SHARELESS_CHAP_SECRET_FILE"
    iniset -sudo "$conf" store path "$SHARELESS_STORE_DIR"
    # Nova's instances directory: a raw instance file on the store's mount
    # is adopted by hard link and stays Nova's live data (README).
    iniset -sudo "$conf" store instances_path "${NOVA_INSTANCES_PATH:-$DATA_DIR/nova/instances}"
    iniset -sudo "$conf" libvirt uri "qemu:///system"

    iniset -sudo "$conf" openstack auth_url "${KEYSTONE_SERVICE_URI:-http://$SERVICE_HOST/identity}/v3"
    iniset -sudo "$conf" openstack username "$SHARELESS_OS_USERNAME"
    iniset -sudo "$conf" openstack password_file "$dir/keystone.password"
    iniset -sudo "$conf" openstack project_name "$SERVICE_PROJECT_NAME"
    iniset -sudo "$conf" openstack user_domain_name "$SERVICE_DOMAIN_NAME"
    iniset -sudo "$conf" openstack project_domain_name "$SERVICE_DOMAIN_NAME"
    iniset -sudo "$conf" openstack region_name "$REGION_NAME"
    iniset -sudo "$conf" openstack interface "$SHARELESS_OS_INTERFACE"

    iniset -sudo "$conf" api listen "$api_listen"
    iniset -sudo "$conf" api psk_file "$SHARELESS_PSK_FILE"
    iniset -sudo "$conf" api socket "$SHARELESS_SOCKET"
    iniset -sudo "$conf" api metrics_listen "$SHARELESS_METRICS_LISTEN"

    if [[ -n $SHARELESS_CINDER_TRANSPORT_MAP ]]; then
        [[ -n $SHARELESS_CINDER_INITIATOR_IQN ]] ||
            die $LINENO "shareless: SHARELESS_CINDER_TRANSPORT_MAP needs SHARELESS_CINDER_INITIATOR_IQN"
        iniset -sudo "$conf" cinder transport_map "$SHARELESS_CINDER_TRANSPORT_MAP"
        iniset -sudo "$conf" cinder initiator_iqn "$SHARELESS_CINDER_INITIATOR_IQN"
    fi

    configure_nova_for_shareless
}

# configure_nova_for_shareless makes Nova send what the agent follows:
# versioned notifications through the messagingv2 driver.
function configure_nova_for_shareless {
    local format driver
    format=$(iniget "$NOVA_CONF" notifications notification_format)
    case $format in
    versioned | both) ;;
    *)
        if [[ -n $format ]]; then
            warn $LINENO "shareless: [notifications] notification_format was '$format'; the agent needs versioned notifications, set to 'both'"
        fi
        iniset "$NOVA_CONF" notifications notification_format both
        ;;
    esac
    driver=$(iniget "$NOVA_CONF" oslo_messaging_notifications driver)
    if [[ ",${driver// /}," != *,messagingv2,* ]]; then
        iniset "$NOVA_CONF" oslo_messaging_notifications driver messagingv2
    fi
    if [[ -z $(iniget "$NOVA_CONF" oslo_messaging_notifications transport_url) ]]; then
        iniset "$NOVA_CONF" oslo_messaging_notifications transport_url "$(get_notification_url)"
    fi
}

function start_shareless {
    run_process shareless-agent "$SHARELESS_BIN agent --config-file $SHARELESS_CONF_FILE" "" "$SHARELESS_USER"
}

function stop_shareless {
    stop_process shareless-agent
}

# cleanup_shareless removes what install and configure made. The store
# holds the managed disks of instances clean.sh deletes anyway. The agent
# is stopped: unstack.sh runs before clean.sh.
function cleanup_shareless {
    sudo rm -f "$SHARELESS_LIBVIRT_HOOK_DIR/shareless" "$SHARELESS_BIN"
    sudo rm -rf "$SHARELESS_CONF_DIR" "$SHARELESS_STORE_DIR" "$SHARELESS_STATE_DIR"
}

if is_service_enabled shareless-agent; then
    if ! is_service_enabled n-cpu; then
        echo "shareless: n-cpu is not enabled on this host; the agent runs next to nova-compute only"
    elif [[ $1 == stack && $2 == pre-install ]]; then
        # files/debs/shareless was installed by devstack already.
        echo_summary "Checking shareless's build tools"
        shareless_go_check
    elif [[ $1 == stack && $2 == install ]]; then
        echo_summary "Installing shareless"
        install_shareless
    elif [[ $1 == stack && $2 == post-config ]]; then
        echo_summary "Configuring shareless"
        configure_shareless
    elif [[ $1 == stack && $2 == extra ]]; then
        echo_summary "Starting the shareless agent"
        start_shareless
    elif [[ $1 == unstack ]]; then
        stop_shareless
    elif [[ $1 == clean ]]; then
        cleanup_shareless
    fi
fi

# Restore xtrace
$_XTRACE_SHARELESS
