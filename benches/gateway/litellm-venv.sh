#!/usr/bin/env bash
# Installs LiteLLM's proxy (pinned) into target/litellm-venv for benches/gateway.rs and prints
# the `litellm` executable to pass as `--litellm`. Idempotent.
#
# 1.106.12 is the newest release whose `proxy` extra installs from PyPI here: from 1.108 on it
# pins `litellm-proxy-extras` versions that are not on PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=1.106.12
VENV=target/litellm-venv
if ! "$VENV/bin/litellm" --version 2>/dev/null | grep -q "$VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$VERSION" >&2
fi
echo "$PWD/$VENV/bin/litellm"
