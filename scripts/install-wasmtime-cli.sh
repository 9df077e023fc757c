#!/usr/bin/env bash
# Installs wasmtime-cli 48.0.8 (the harness's wasmtime version) from crates.io with only what
# `wasmtime serve` needs, into a cache directory that later runs reuse. Prints the path of the
# `wasmtime` binary on stdout. In 48.0.8 `serve` does not build without `run` (shared flags) and
# `component-model-async` (it uses `futures`), and it uses the pooling allocator; left out: wast, explore, objdump, wizer, wasi-nn,
# wasi-tls, wasi-keyvalue, wasi-config, winch, pulley, gc, threads, cache, debug.
#
#   WASMTIME_CLI_ROOT   install root (default ~/.cache/openai-connector/wasmtime-cli-48.0.8)
set -euo pipefail

VERSION=48.0.8
FEATURES=run,serve,cranelift,component-model-async,pooling-allocator
ROOT="${WASMTIME_CLI_ROOT:-$HOME/.cache/openai-connector/wasmtime-cli-$VERSION}"
BIN="$ROOT/bin/wasmtime"
STAMP="$ROOT/openai-connector-features"

if [ -x "$BIN" ] && "$BIN" --version | grep -qF "$VERSION" && [ "$(cat "$STAMP" 2>/dev/null)" = "$FEATURES" ]; then
  echo "wasmtime-cli $VERSION ($FEATURES) already installed in $ROOT" >&2
else
  echo "installing wasmtime-cli $VERSION ($FEATURES) into $ROOT" >&2
  start=$(date +%s)
  cargo install wasmtime-cli --version "$VERSION" --locked --force \
    --no-default-features --features "$FEATURES" \
    --root "$ROOT" >&2
  echo "$FEATURES" > "$STAMP"
  echo "wasmtime-cli $VERSION installed in $(( $(date +%s) - start )) s" >&2
fi
echo "$BIN"
