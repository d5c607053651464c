#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a short time each.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-10s}
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
	pkg=./$(dirname "${f#./}")
	grep -oE '^func Fuzz[A-Za-z0-9_]+' "$f" | cut -d' ' -f2 | while read -r name; do
		echo "fuzz $pkg $name ($fuzztime)"
		go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "$pkg" </dev/null
	done
done
