#!/usr/bin/env bash
# Installs LiteLLM's proxy (pinned) into target/litellm-venv ($CARGO_TARGET_DIR/litellm-venv when
# that is set; a relative value is taken from the workspace root) for benches/gateway.rs and
# prints the absolute path of the `litellm` executable to pass as `--litellm`. Idempotent.
#
# 1.106.12 is the newest release whose `proxy` extra installs from PyPI here: from 1.108 on it
# pins `litellm-proxy-extras` versions that are not on PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=1.106.12
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$PWD/$TARGET_DIR" ;; esac
VENV="$TARGET_DIR/litellm-venv"
if ! "$VENV/bin/litellm" --version 2>/dev/null | grep -q "$VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$VERSION" >&2
fi
echo "$VENV/bin/litellm"
