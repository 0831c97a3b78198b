#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, then the
# end-to-end checks with real Singer tools (scripts/e2e.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
bash scripts/e2e.sh
