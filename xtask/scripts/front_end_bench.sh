#!/usr/bin/env bash
# SSB at SF 1 in-process: Polars' SQL context (`sql_front_end = "polars"`), Spool's planner
# with its levers (the default) and the planner with every lever off (`--levers-off all`),
# taking turns query by query; prints each query's median of the last 7 of 8 runs, in ms.
# Usage: xtask/scripts/front_end_bench.sh [DATA_DIR]   (after `cargo build --release -p spool-server`)
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
server="${CARGO_TARGET_DIR:-$HOME/.cache/spool-target}/release/spool-server"
data="${1:-$(mktemp -d)/front-end-bench}"
queries="$here/crates/spool-ssb/queries"
if [ ! -d "$data/projects/ssb" ]; then
  mkdir -p "$data/projects"
  "$server" gen-ssb --sf 1 --out "$data/projects/ssb" >/dev/null
fi
# median FRONT_END SQL [QUERY ARGS...]
median() {
  local front_end="$1" sql="$2"
  shift 2
  "$server" --data-dir "$data" --sample-sf 0 --sql-front-end "$front_end" query --project ssb \
    --repeat 8 "$@" "$sql" 2>&1 >/dev/null | grep -o '[0-9.]* ms$' | tail -7 | sed 's/ ms//' \
    | sort -n | sed -n 4p
}
printf "%-6s %10s %10s %10s\n" query polars spool levers-off
for file in "$queries"/q*.sql; do
  sql="$(tr '\n' ' ' < "$file")"
  printf "%-6s %10s %10s %10s\n" "$(basename "$file" .sql)" "$(median polars "$sql")" \
    "$(median spool "$sql")" "$(median spool "$sql" --levers-off all)"
done
