# shellcheck shell=bash
# The part of devstack's function contract that plugin.sh uses, recorded.
#
# devstack_test.go sources this file in place of devstack's functions,
# then settings, override-defaults and plugin.sh. Every function appends
# one line to $CONTRACT_LOG: its name and its arguments, each quoted with
# printf %q, so that the test can check what the plugin asked devstack to
# do. The functions that change files do change them, under the test's
# temporary root: iniset edits INI files line by line as devstack's does
# (comments, order and other options are kept), iniget reads them, sudo
# runs its command as the caller, run_process and stop_process keep a
# file per running service under $CONTRACT_ROOT/run.
#
# Semantics follow devstack's functions-common and inc/ini-config:
#   iniset [-sudo] FILE SECTION OPTION VALUE
#   iniget FILE SECTION OPTION              prints the value, or nothing
#   run_process NAME "COMMAND" [GROUP] [USER]
#   stop_process NAME
#   is_service_enabled NAME...              true if any is in ENABLED_SERVICES
#   get_notification_url [VHOST]            rabbit://USER:PASS@HOST:5672/VHOST
#   die LINENO MESSAGE...                   prints and exits 1

function _record {
    local line
    line=$(printf ' %q' "$@")
    echo "${line# }" >>"$CONTRACT_LOG"
}

# _ini is the INI editor and reader behind iniset and iniget.
function _ini {
    /usr/bin/python3 - "$@" <<'PY'
import re, sys

op, path, section, option = sys.argv[1:5]
header = re.compile(r'^\s*\[([^\]]+)\]\s*$')
opt = re.compile(r'^\s*([^#;=\s][^=]*?)\s*=\s?(.*)$')
try:
    with open(path) as f:
        lines = f.read().splitlines()
except FileNotFoundError:
    if op == 'get':
        sys.exit(0)
    lines = []

current, found, end = None, None, None  # end: index after the section's last line
for i, line in enumerate(lines):
    m = header.match(line)
    if m:
        current = m.group(1)
        if current == section:
            end = i + 1
        continue
    if current == section:
        if line.strip():
            end = i + 1
        m = opt.match(line)
        if m and m.group(1) == option and found is None:
            found = (i, m.group(2))

if op == 'get':
    if found:
        print(found[1])
    sys.exit(0)

value = sys.argv[5]
entry = f'{option} = {value}'
if found:
    lines[found[0]] = entry
elif end is not None:
    lines.insert(end, entry)
else:
    if lines and lines[-1].strip():
        lines.append('')
    lines += [f'[{section}]', entry]
with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
PY
}

function iniset {
    _record iniset "$@"
    [[ $1 == -sudo ]] && shift
    _ini set "$1" "$2" "$3" "$4"
}

function iniget {
    _record iniget "$@"
    _ini get "$1" "$2" "$3"
}

function sudo {
    _record sudo "$@"
    "$@"
}

function is_service_enabled {
    local s
    for s in "$@"; do
        [[ ,$ENABLED_SERVICES, == *,"$s",* ]] && return 0
    done
    return 1
}

function enable_service {
    _record enable_service "$@"
    local s
    for s in "$@"; do
        is_service_enabled "$s" || ENABLED_SERVICES+=",$s"
    done
}

function run_process {
    _record run_process "$@"
    mkdir -p "$CONTRACT_ROOT/run"
    printf '%s\n' "$2" >"$CONTRACT_ROOT/run/$1"
}

function stop_process {
    _record stop_process "$@"
    rm -f "$CONTRACT_ROOT/run/$1"
}

function get_notification_url {
    _record get_notification_url "$@"
    echo "rabbit://$RABBIT_USERID:$RABBIT_PASSWORD@$RABBIT_HOST:5672/${1:-}"
}

function install_package {
    _record install_package "$@"
}

function restart_service {
    _record restart_service "$@"
}

function echo_summary {
    _record echo_summary "$@"
}

function warn {
    _record warn "$@"
    echo "WARNING: ${*:2}" >&2
}

function die {
    _record die "$@"
    echo "ERROR: ${*:2}" >&2
    exit 1
}
