#!/usr/bin/env bash
# Tandem's property tests (tests/props/): the event decoder, the mapping and sources files and
# the template language, timestamps, JSON-lines detections, composite keys and cloudsim's
# request hash, on generated input.
#
#   bash tests/props.sh                 every property at proptest's case count (PROPTEST_CASES,
#                                       256 by default), as the test command runs them
#   bash tests/props.sh --long [SECONDS]
#                                       every property for SECONDS (600 by default), all at once,
#                                       round after round of cases, printing each one's count
#   bash tests/props.sh [--long [SECONDS]] NAME
#                                       only the properties whose test name contains NAME
#
# A failure prints the property, the smallest input it shrank to and the seed to run it again
# with (TANDEM_PROPTEST_SEED=…).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

seconds=
filter=()
while [ $# -gt 0 ]; do
  case $1 in
    --long)
      seconds=600
      if [[ ${2:-} =~ ^[0-9]+$ ]]; then seconds=$2; shift; fi ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "tests/props.sh: unknown option $1" >&2; exit 2 ;;
    *) filter+=("$1") ;;
  esac
  shift
done

cargo build --locked -p tandem-tests --tests >&2
if [ -z "$seconds" ]; then
  exec cargo test --locked -p tandem-tests --test props -- "${filter[@]}"
fi

# Every property on a thread of its own, so each runs for the whole budget.
count=$(cargo test --locked -p tandem-tests --test props -- --list "${filter[@]}" 2>/dev/null | grep -c ': test$')
echo "running $count properties for $seconds s each, side by side on $(nproc) cores" >&2
started=$(date +%s)
TANDEM_PROPTEST_SECONDS=$seconds cargo test --locked -p tandem-tests --test props -- \
  --nocapture --test-threads "$count" "${filter[@]}" 2>&1 | grep -E '^property |FAILED|panicked|test result'
status=${PIPESTATUS[0]}
echo "wall clock: $(($(date +%s) - started)) s" >&2
exit "$status"
