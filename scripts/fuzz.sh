#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ (nightly) and runs each one over a copy of its
# seed corpus (fuzz/corpus/<target>/). See docs/fuzzing.md.
#
#   scripts/fuzz.sh                  CI-safe: each target for FUZZ_RUNS executions (default
#                                    500000), capped at FUZZ_MAX_TIME seconds (default 60)
#   scripts/fuzz.sh --long SECONDS   each target for SECONDS, however many executions
#   scripts/fuzz.sh ... TARGET...    only these targets
#
# New inputs the fuzzer finds go to a temporary directory, never into the repository.
# Exits non-zero when any target crashes (a panic, a failed assertion, a timeout or an
# out-of-memory), printing the path of the crashing input and the input itself.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${FUZZ_RUNS:-500000}"
max_time="${FUZZ_MAX_TIME:-60}"
mode="ci"
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --long)
      [ $# -ge 2 ] || { echo "scripts/fuzz.sh: --long needs a number of seconds" >&2; exit 2; }
      mode="long"; runs=-1; max_time="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "scripts/fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: the nightly toolchain is missing (cargo-fuzz needs it): rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# Nightly, instrumented artifacts live apart from the stable ones; under .ci/run they sit
# in the kept CI cache, so later runs rebuild only what changed.
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-$PWD/fuzz/target}"
# No sanitizer: the workspace forbids unsafe code, so AddressSanitizer would watch only
# dependencies, at twice the build and run time. Overflow checks and debug assertions stay
# on (cargo-fuzz's default), and panics are crashes.
# The fuzz crate has its own lock file; a stale one would make every run pick the newest
# releases of whatever is missing (untested versions, new warnings), so it must be current.
if ! lock_err=$(cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml 2>&1 >/dev/null); then
  echo "$lock_err" >&2
  echo "scripts/fuzz.sh: fuzz/Cargo.lock is out of date with the workspace's dependencies;" >&2
  echo "  run 'cargo metadata --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null' and pin" >&2
  echo "  the added crates to the versions in Cargo.lock ('cargo update -p NAME --precise VERSION')" >&2
  exit 1
fi
echo "== fuzz: building targets (nightly, $target_dir)"
build_start=$SECONDS
cargo +nightly fuzz build --sanitizer none --codegen-units 16 --target-dir "$target_dir"
echo "== fuzz: built in $((SECONDS - build_start)) s"

if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
bin_dir="$target_dir/x86_64-unknown-linux-gnu/release"
work=$(mktemp -d "${TMPDIR:-/tmp}/lockerfleet-fuzz.XXXXXX")

total_exec=0
crashes=0
failed_targets=()
for t in "${targets[@]}"; do
  [ -x "$bin_dir/$t" ] || { echo "scripts/fuzz.sh: no fuzz target $t (cargo fuzz list)" >&2; exit 2; }
  mkdir -p "$work/$t/corpus" "$work/$t/crashes"
  if [ -d "fuzz/corpus/$t" ]; then cp -R "fuzz/corpus/$t/." "$work/$t/corpus/"; fi
  case "$t" in
    config_*) extra=(-dict=fuzz/dict/toml.dict) ;;
    topic) extra=() ;;
    # Longer than the 4096 bytes a pass may have, to exercise that refusal.
    courier_pass) extra=(-max_len=8192) ;;
    *) extra=(-dict=fuzz/dict/json.dict) ;;
  esac
  log="$work/$t/log"
  started=$SECONDS
  set +e
  "$bin_dir/$t" -runs="$runs" -max_total_time="$max_time" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${extra[@]}" -artifact_prefix="$work/$t/crashes/" "$work/$t/corpus" >"$log" 2>&1
  status=$?
  set -e
  execs=$(awk '/stat::number_of_executed_units:/ { n = $2 } END { print n + 0 }' "$log")
  total_exec=$((total_exec + execs))
  found=$(find "$work/$t/crashes" -type f | sort)
  if [ "$status" -ne 0 ] || [ -n "$found" ]; then
    failed_targets+=("$t")
    crashes=$((crashes + $(printf '%s\n' "$found" | grep -c . || true)))
    [ -n "$found" ] || crashes=$((crashes + 1))
    echo "fuzz: $t FAILED (exit $status) after $execs executions; its log:"
    grep -A6 'panicked at' "$log" | head -30 || true
    grep -v '^#[0-9]' "$log" | grep -v '^ \+\(at \|[0-9]\+:\)' | tail -12
    for f in $found; do
      echo "fuzz: crash input of $t: $f (base64 below; replay: $bin_dir/$t $f)"
      head -c 4096 "$f" | base64 -w 0; echo
    done
  else
    printf 'fuzz: %-18s %9d executions in %3d s, 0 crashes, corpus %d inputs\n' "$t" "$execs" \
      "$((SECONDS - started))" \
      "$(find "$work/$t/corpus" -type f | wc -l)"
  fi
done

echo "fuzz: ${#targets[@]} targets, $total_exec executions, $crashes crashes"
if [ ${#failed_targets[@]} -gt 0 ]; then
  echo "fuzz: failing targets: ${failed_targets[*]} (inputs and logs kept in $work)" >&2
  exit 1
fi
rm -rf "$work"
