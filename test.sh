#!/usr/bin/env bash
# Runs the whole test suite: format and lint checks, unit tests, and integration tests that start the real
# binary, the bundled fake kube-apiserver and real clients (kubectl, the Python
# client) on loopback. Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v kubectl >/dev/null || missing+=(kubectl)
command -v curl >/dev/null || missing+=(curl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if ((${#missing[@]})) && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq >/dev/null || true
  apt-get install -y -qq "${missing[@]}" >/dev/null || echo "warning: could not install ${missing[*]}" >&2
fi

# The tree is formatted and lint-clean before anything runs.
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings

# The static binary edgeadm copies onto nodes: tests/deploy.rs checks it is static.
if [[ $(uname -m) == x86_64 ]]; then
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet \
    --target x86_64-unknown-linux-gnu --bin lite-apiserver
  export LITE_STATIC_BINARY="${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/lite-apiserver"
fi

cargo test --release --no-fail-fast "$@"
