#!/usr/bin/env bash
# Runs each cargo-fuzz target of the data crate for a short while and fails on the first panic.
#
#   fuzz/run.sh            # 30 seconds per target
#   fuzz/run.sh 60         # 60 seconds per target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo-fuzz passes nightly-only
# compiler flags (-Zsanitizer), so on a stable toolchain the script sets RUSTC_BOOTSTRAP=1,
# which lets stable rustc accept them. The corpus grows under fuzz/corpus/ and crashes land in
# fuzz/artifacts/, both ignored by git.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
targets=(hh_rlhf csv_reader jsonl_reader)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "error: cargo-fuzz not found; install it with: cargo install cargo-fuzz --locked" >&2
    exit 1
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

# Seed inputs, so the fuzzer starts from the shapes the readers expect.
mkdir -p corpus/hh_rlhf corpus/csv_reader corpus/jsonl_reader
printf '\n\nHuman: Hi\n\nAssistant: Hello\xff\n\nHuman: Hi\n\nAssistant: No' > corpus/hh_rlhf/seed
printf 'prompt,chosen\n"a, ""b""","line\nbreak"\nx,y\n' > corpus/csv_reader/seed
printf '{"chosen": "\\n\\nHuman: Hi", "rejected": 1}\n[1]\n' > corpus/jsonl_reader/seed

for target in "${targets[@]}"; do
    echo "fuzz/run.sh: fuzzing $target for ${seconds}s"
    cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
echo "fuzz/run.sh: no target panicked"
