#!/usr/bin/env bash
# Bounded local load test of `openai-connector serve`: N concurrent streaming chat completions
# for a fixed time against a loopback SSE upstream, with wrk (Debian: apt-get install -y wrk).
# Prints wrk's figures, non-2xx/socket errors, the event-log line count and the gateway's RSS
# before and after. Everything runs on 127.0.0.1 and stops by itself.
#
#   scripts/serve-load.sh [CONNECTIONS=64] [SECONDS=20] [BINARY=$CARGO_TARGET_DIR/debug/openai-connector]
#
# CARGO_TARGET_DIR defaults to target (a relative value is taken from the workspace root).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-64}
SECS=${2:-20}
BIN=${3:-${CARGO_TARGET_DIR:-target}/debug/openai-connector}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 2; }
[ -x "$BIN" ] || { echo "$BIN not built: cargo build -p openai-connector-harness" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Upstream: a small asyncio SSE server (5 content chunks 2 ms apart, a usage chunk, [DONE]).
cat >"$work/upstream.py" <<'PY'
import asyncio, sys
CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n'
USAGE = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}\n\n'
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for part in [CHUNK] * 5 + [USAGE, b"data: [DONE]\n\n"]:
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0.002)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
PY
python3 "$work/upstream.py" >"$work/upstream.port" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/upstream.port" ] && break; sleep 0.1; done
UPORT=$(cat "$work/upstream.port")

mkdir "$work/connectors"
cat >"$work/connectors/load.json" <<JSON
{"name":"Load","config":{"apiProvider":"OpenAI","apiUrl":"http://127.0.0.1:$UPORT/v1/chat/completions"},"secrets":{"apiKey":"sk-load-test"}}
JSON
export OPENAI_CONNECTOR_ADMIN_TOKEN=load-admin-token
"$BIN" serve --connectors "$work/connectors" --listen 127.0.0.1:0 --event-log "$work/events.log" 2>"$work/serve.err" &
GW=$!
pids+=($GW)
for _ in $(seq 600); do grep -q '^listening on' "$work/serve.err" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's/^listening on //p' "$work/serve.err")
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$GW/status"; }

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"load"}],"stream":true}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer load-admin-token"
LUA
# Warm-up (compiles nothing new, fills the instance pool), then measure.
wrk -t1 -c4 -d2s -s "$work/post.lua" "$ADDR/connectors/load/v1/chat/completions" >/dev/null
echo "RSS before: $(rss)"
# Two rounds: memory that keeps growing between equal rounds would be a leak.
for round in 1 2; do
  echo "--- round $round"
  wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s "$work/post.lua" "$ADDR/connectors/load/v1/chat/completions"
  echo "RSS after round $round: $(rss)"
done
echo "event-log lines: $(wc -l <"$work/events.log")"
echo "failures in event log: $(grep -c '"outcome":"failure"' "$work/events.log" || true)"
grep -o '"error":{"message":"[^"]*' "$work/events.log" | sort | uniq -c | head -5 || true
curl -s -H "Authorization: Bearer load-admin-token" "$ADDR/metrics" \
  | grep -E '^openai_connector_(requests_total|request_failures_total|guest_traps_total|in_flight)' || true
kill -TERM "$GW"; wait "$GW"; echo "serve exit code: $?"
