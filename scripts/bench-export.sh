#!/usr/bin/env bash
# bench export: shareless export against tgtd, both serving the same kind
# of 1 GiB file with the same CHAP account, driven by the same real
# initiator (libiscsi, through scripts/iscsi-load.c). Prints
#   bench export/<workload>: ours=<v> <unit> tgt=<v> <unit> ratio=<ours/tgt>
# BENCH_SECONDS (default 5) sets the length of each run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECONDS:-5}
work=$(mktemp -d)
pids=()
cleanup() {
	# tgtd ignores SIGTERM while it has targets.
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }

gcc -O2 -Wall -o "$work/iscsi-load" scripts/iscsi-load.c -liscsi
user=bench secret=bench-secret-0123
printf '%s\n' "$secret" >"$work/secret"
# Fully written files: no unwritten extents to convert during the runs.
for f in ours tgt; do dd if=/dev/zero of="$work/$f.img" bs=1M count=1024 conv=fsync status=none; done

oport=$(free_port)
bin/shareless export --listen "127.0.0.1:$oport" --iqn iqn.2026-11.org.shareless:bench \
	--chap-user "$user" --chap-secret-file "$work/secret" "$work/ours.img" 2>"$work/ours.log" &
pids+=($!)
wait_port "$oport"
ours="iscsi://$user%$secret@127.0.0.1:$oport/iqn.2026-11.org.shareless:bench/0"

tport=$(free_port)
for ctl in $(seq 100 149); do
	tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$tport" >"$work/tgtd.log" 2>&1 &
	tpid=$!
	sleep 0.3
	kill -0 "$tpid" 2>/dev/null && break
done
pids+=("$tpid")
adm() { tgtadm -C "$ctl" --lld iscsi "$@" >/dev/null; }
adm --mode target --op new --tid 1 --targetname iqn.2026-11.org.tgt:bench
adm --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$work/tgt.img"
adm --mode target --op bind --tid 1 --initiator-address ALL
adm --mode account --op new --user "$user" --password "$secret"
adm --mode account --op bind --tid 1 --user "$user"
wait_port "$tport"
tgt="iscsi://$user%$secret@127.0.0.1:$tport/iqn.2026-11.org.tgt:bench/1"

measure() { # name rw pattern bs qd unit-field(1=MiB/s 3=IOPS) unit
	local o t
	o=$("$work/iscsi-load" "$ours" "$2" "$3" "$4" "$5" "$secs" | awk -v f="$6" '{print $f}')
	t=$("$work/iscsi-load" "$tgt" "$2" "$3" "$4" "$5" "$secs" | awk -v f="$6" '{print $f}')
	awk -v n="$1" -v o="$o" -v t="$t" -v u="$7" \
		'BEGIN { printf "bench export/%s: ours=%s %s tgt=%s %s ratio=%.2f\n", n, o, u, t, u, (t > 0 ? o / t : 0) }'
}
measure seq-read-1M-qd1 read seq 1048576 1 1 MiB/s
measure seq-read-1M-qd8 read seq 1048576 8 1 MiB/s
measure seq-write-1M-qd1 write seq 1048576 1 1 MiB/s
measure seq-write-1M-qd8 write seq 1048576 8 1 MiB/s
measure rand-read-4k-qd1 read rand 4096 1 3 IOPS
measure rand-read-4k-qd32 read rand 4096 32 3 IOPS
measure rand-write-4k-qd1 write rand 4096 1 3 IOPS
measure rand-write-4k-qd32 write rand 4096 32 3 IOPS
