#!/usr/bin/env bash
# Benchmarks `shareless copy iscsi://... FILE` against
# `qemu-img convert -p -m 16 -W -O raw iscsi://... FILE` from the same
# LUN, served by tgtd and by our own target (shareless export), for a dense
# and a 90% unallocated 2 GiB image. Prints
# `bench copy/<case>: ours=<s> qemu-img=<s> ratio=<ours/qemu-img>`, each
# time the best of $RUNS alternating runs. ONLY=regex runs some cases.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-2048}
BIN=${BIN:-bin/shareless}

[ "$(id -u)" = 0 ] || { echo "bench-copy: needs root (tgtd)"; exit 1; }
for c in tgtd tgtadm qemu-img; do
	command -v "$c" >/dev/null || { echo "bench-copy: $c missing (make deps)"; exit 1; }
done
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/shareless

work=$(mktemp -d /var/tmp/shareless-bench-copy.XXXXXX)
tgtd_pid='' export_pid=''
cleanup() {
	for pid in $tgtd_pid $export_pid; do
		if kill -9 "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; fi
	done
	rm -rf "$work"
}
trap cleanup EXIT

# A tgtd control port of our own (150..199, shared with the Go tests
# through the same lock files) and a free portal port.
ctrl=
for n in $(seq 199 -1 150); do
	exec 9>"/tmp/shareless-tgtd-ctrl.$n.lock"
	if flock -n 9 && ! tgtadm -C "$n" --op show --mode system >/dev/null 2>&1; then
		ctrl=$n
		break
	fi
	exec 9>&-
done
[ -n "$ctrl" ] || { echo "bench-copy: no free tgtd control port"; exit 1; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(freeport)

echo "bench-copy: building images (${SIZE_MIB} MiB each) in $work"
head -c "${SIZE_MIB}M" /dev/urandom >"$work/dense.img"
truncate -s "${SIZE_MIB}M" "$work/sparse.img"
# 10% allocated: a 4 MiB extent of random data in every 40 MiB.
for ((off = 0; off < SIZE_MIB; off += 40)); do
	head -c 4M /dev/urandom | dd of="$work/sparse.img" bs=1M seek="$off" conv=notrunc status=none
done

tgtd -f -C "$ctrl" --iscsi "portal=127.0.0.1:$port" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
adm() { tgtadm -C "$ctrl" --lld iscsi "$@"; }
for _ in $(seq 100); do adm --op show --mode system >/dev/null 2>&1 && break; sleep 0.05; done
tid=0
for img in dense sparse; do
	tid=$((tid + 1))
	adm --op new --mode target --tid "$tid" -T "iqn.2026-11.io.shareless.bench:$img"
	adm --op new --mode logicalunit --tid "$tid" --lun 1 -b "$work/$img.img"
	adm --op update --mode logicalunit --tid "$tid" --lun 1 --params thin_provisioning=1
	adm --op bind --mode target --tid "$tid" -I ALL
done

# Our target serves the same two files as LUN 0 and 1 of one target.
own_port=$(freeport)
"$BIN" export --listen "127.0.0.1:$own_port" --iqn iqn.2026-11.io.shareless.bench:own --no-auth \
	"$work/dense.img" "$work/sparse.img" 2>"$work/export.log" &
export_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$own_port") 2>/dev/null && break; sleep 0.05; done

# sparseness IMG URL: how sparse the bench's source is, on disk and as
# both tools see it over iSCSI. shareless copy and qemu-img convert both ask
# GET LBA STATUS and skip what the target reports deallocated (qemu-img
# only where unmapped blocks read as zeroes, LBPRZ, as ours): `qemu-img map`
# shows what qemu-img will read. Equal data on both lines: a fair race.
sparseness() {
	local alloc data
	alloc=$(du -B1 "$1" | cut -f1)
	data=$(qemu-img map -f raw --output=json "$2" | awk '/"data": true/ { if (match($0, /"length": [0-9]+/)) n += substr($0, RSTART + 10, RLENGTH - 10) } END { print n + 0 }')
	echo "$((alloc >> 20)) MiB of $SIZE_MIB MiB allocated in the file; over iSCSI qemu-img map sees $((data >> 20)) MiB of data, the rest deallocated"
}

now() { date +%s.%N; }
# run CMD...: seconds taken by one run from a clean start (no destination
# file, no dirty pages of an earlier run still being written back).
run() {
	local t0 t1
	rm -f "$work/out.img"
	sync
	t0=$(now)
	"$@" >/dev/null 2>"$work/err.log" || { cat "$work/err.log" >&2; return 1; }
	t1=$(now)
	echo "$t1 - $t0" | bc -l
}
lower() { if [ -z "$1" ] || (($(echo "$2 < $1" | bc -l))); then echo "$2"; else echo "$1"; fi; }

# shareless copy flushes its destination before it reports done;
# `qemu-img convert` as the issue names it leaves the output in the page
# cache (cache mode "unsafe"). The *-durable cases run qemu-img with
# `-t writeback`, which flushes on close, so that both promise the same.
echo "bench-copy: shareless copy flushes its destination before it reports done; qemu-img convert does not unless -t writeback (the *-durable cases)"
cases=(
	"tgtd-dense dense iscsi://127.0.0.1:$port/iqn.2026-11.io.shareless.bench:dense/1 unsafe"
	"tgtd-sparse sparse iscsi://127.0.0.1:$port/iqn.2026-11.io.shareless.bench:sparse/1 unsafe"
	"own-dense dense iscsi://127.0.0.1:$own_port/iqn.2026-11.io.shareless.bench:own/0 unsafe"
	"own-sparse sparse iscsi://127.0.0.1:$own_port/iqn.2026-11.io.shareless.bench:own/1 unsafe"
	"tgtd-dense-durable dense iscsi://127.0.0.1:$port/iqn.2026-11.io.shareless.bench:dense/1 writeback"
	"own-dense-durable dense iscsi://127.0.0.1:$own_port/iqn.2026-11.io.shareless.bench:own/0 writeback"
	"tgtd-sparse-durable sparse iscsi://127.0.0.1:$port/iqn.2026-11.io.shareless.bench:sparse/1 writeback"
	"own-sparse-durable sparse iscsi://127.0.0.1:$own_port/iqn.2026-11.io.shareless.bench:own/1 writeback"
)
for c in "${cases[@]}"; do
	read -r name img url cache <<<"$c"
	[[ $name =~ ${ONLY:-.} ]] || continue # ONLY=regex picks cases
	qemu_cache=()
	[ "$cache" = writeback ] && qemu_cache=(-t writeback)
	echo "bench-copy: $name source $img: $(sparseness "$work/$img.img" "$url")"
	cat "$work/$img.img" >/dev/null # both tools read from a warm page cache
	ours='' qemu=''
	# Alternate the tools, so that both see the same machine load; keep
	# each one's best run.
	for ((i = 0; i < RUNS; i++)); do
		ours=$(lower "$ours" "$(run "$BIN" copy "$url" "$work/out.img")")
		cmp "$work/$img.img" "$work/out.img" || { echo "bench-copy: shareless copy of $img differs"; exit 1; }
		qemu=$(lower "$qemu" "$(run qemu-img convert -p -m 16 -W "${qemu_cache[@]}" -O raw "$url" "$work/out.img")")
		cmp "$work/$img.img" "$work/out.img" || { echo "bench-copy: qemu-img copy of $img differs"; exit 1; }
	done
	printf 'bench copy/%s: ours=%.3f qemu-img=%.3f ratio=%.2f\n' "$name" "$ours" "$qemu" "$(echo "$ours / $qemu" | bc -l)"
done
