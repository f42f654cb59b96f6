#!/usr/bin/env bash
# runledger's `Worker` against effectum's worker on the same workload, back to back on this
# machine (issue 11's aim: runledger's Worker >= 2x effectum's, WAL with synchronous NORMAL).
#
#   benches/peers/run.sh                           # full scale: 20,000 jobs each
#   RUNLEDGER_BENCH_SCALE=0.25 benches/peers/run.sh
#
# 1. effectum (benches/peers/effectum, its own workspace and Cargo.lock, release build):
#    modes `wal` (the aim's WAL NORMAL) and `shipped` (what effectum 0.7 sets on its own);
#    EFFECTUM_PEER_MODES=wal runs only the first.
# 2. runledger: `cargo bench --bench core` with RUNLEDGER_BENCH_CASES=worker,create (the
#    Worker case, its plain baseline, and create one call per job).
# Then both figures, the ratio runledger / effectum (WAL), and the load average.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
export CARGO_TERM_COLOR=never
out=$(mktemp -d)

echo "== load before: $(cat /proc/loadavg)"
echo "== effectum ($(date -u +%FT%TZ))"
(cd benches/peers/effectum && cargo run --release --quiet) | tee "$out/effectum.txt"
echo "== load between: $(cat /proc/loadavg)"
echo "== runledger ($(date -u +%FT%TZ))"
RUNLEDGER_BENCH_CASES=worker,create cargo bench --quiet --bench core | tee "$out/runledger.txt"
echo "== load after: $(cat /proc/loadavg)"

field() { sed -n "s/.*$2=\([0-9.]*\).*/\1/p" <<<"$1"; }
wal=$(grep '^EFFECTUM mode=wal ' "$out/effectum.txt" || true)
shipped=$(grep '^EFFECTUM mode=shipped ' "$out/effectum.txt" || true)
# runledger's rows: "| Worker x2, ... | 394 jobs/s | 6322 jobs/s | 0.06x |"
rl_row() { grep "^| $1" "$out/runledger.txt" | awk -F'|' '{print $3}' | awk '{print $1}'; }
rl_worker=$(rl_row 'Worker x2')
rl_create=$(rl_row 'create, one call per job')

echo
echo "## runledger vs effectum (jobs/s, higher is better; $root)"
echo
echo "| figure | jobs/s |"
echo "|---|---|"
[ -n "$wal" ] && echo "| effectum worker (WAL, NORMAL) | $(field "$wal" worker) |"
[ -n "$wal" ] && echo "| effectum create, one call per job (WAL, NORMAL) | $(field "$wal" create) |"
[ -n "$shipped" ] && echo "| effectum worker (as shipped: journal $(sed -n 's/.*journal=\([a-z]*\).*/\1/p' <<<"$shipped"), NORMAL) | $(field "$shipped" worker) |"
[ -n "$shipped" ] && echo "| effectum create (as shipped) | $(field "$shipped" create) |"
echo "| runledger Worker (WAL, NORMAL) | $rl_worker |"
echo "| runledger create, one call per job (WAL, NORMAL) | $rl_create |"
if [ -n "$wal" ]; then
  awk -v r="$rl_worker" -v e="$(field "$wal" worker)" \
    'BEGIN { printf "| ratio runledger Worker / effectum worker (WAL) | %.2fx (aim >= 2x: %s) |\n", r / e, (r / e >= 2 ? "met" : "not met") }'
  awk -v r="$rl_create" -v e="$(field "$wal" create)" \
    'BEGIN { printf "| ratio runledger create / effectum create (WAL) | %.2fx |\n", r / e }'
fi
echo
echo "loadavg: $(cat /proc/loadavg)"
rm -rf "$out"
