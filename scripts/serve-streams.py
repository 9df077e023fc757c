#!/usr/bin/env python3
"""Bounded local test of how many open streams `openai-connector serve` holds, and at what memory.

A loopback upstream answers every chat completion with a stream that trickles one chunk a second
for the whole run; a client process opens streaming requests through `serve` and holds
them, in steps (1,000, then 4,000, then 8,000 by default). At each step, once every stream has
its response head and a chunk, the gateway's memory is read from /proc: VmRSS, PSS, and where it
goes (the pooled linear memories, the pooled async stacks, the malloc heap, ...), with the
gateway's own count of executions in flight and of requests it did not admit (/metrics). A
stream that is refused (any status but 200) or that stops receiving chunks is counted as failed.
At the end the clients leave and the memory is read once more (what the process keeps).

    scripts/serve-streams.py [--binary PATH] [--steps 1000,4000,8000] [--settings JSON]

The upstream, the clients and `serve` are three processes, so each has its own descriptor
table; every one raises its open-files limit to the hard limit. Everything runs on 127.0.0.1
and stops by itself (--deadline bounds the whole run). The binary defaults to
$CARGO_TARGET_DIR/release/openai-connector, else target/release/openai-connector.
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n'
)
USAGE = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}\n\n'
)
ADMIN_TOKEN = "streams-admin-token"


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- upstream: one chunk a second per stream, for --stream-seconds -------------------------


async def upstream_main(stream_seconds):
    async def handle(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            ends = time.monotonic() + stream_seconds
            while time.monotonic() < ends:
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                await writer.drain()
                await asyncio.sleep(1)
            for part in (USAGE, b"data: [DONE]\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


# --- clients: open streams on command, report their state --------------------------------


class Streams:
    def __init__(self, host, port, path):
        self.host, self.port, self.path = host, port, path
        self.opened = 0
        self.heads = []  # seconds from connect to response head, per stream with a 200 head
        self.failed = {}  # reason -> count
        self.last_chunk = {}  # stream index -> monotonic time of its last chunk
        self.tasks = set()

    def fail(self, reason):
        self.failed[reason] = self.failed.get(reason, 0) + 1

    async def one(self, index):
        body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hold"}],"stream":true}'
        request = (
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\nauthorization: Bearer %s\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (self.path.encode(), self.host.encode(), self.port, ADMIN_TOKEN.encode(),
               len(body), body)
        )
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as e:
            self.fail(f"connect: {e.strerror or e}")
            return
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            if status != "200":
                self.fail(f"status {status}")
                return
            self.heads.append(time.monotonic() - started)
            while True:
                data = await reader.read(65536)
                if not data:
                    self.fail("closed")
                    return
                self.last_chunk[index] = time.monotonic()
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self.fail(f"reset: {type(e).__name__}")
        finally:
            self.last_chunk.pop(index, None)
            writer.close()

    def open(self, n):
        for _ in range(n):
            task = asyncio.ensure_future(self.one(self.opened))
            self.opened += 1
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def state(self):
        now = time.monotonic()
        heads = sorted(self.heads)
        return {
            "opened": self.opened,
            "heads": len(heads),
            "head_p50_ms": round(heads[len(heads) // 2] * 1000, 1) if heads else None,
            "head_max_ms": round(heads[-1] * 1000, 1) if heads else None,
            # Receiving: a chunk within the last 2.5 s (the upstream sends one a second).
            "receiving": sum(1 for t in self.last_chunk.values() if now - t < 2.5),
            "failed": self.failed,
        }


async def clients_main(host, port, path):
    streams = Streams(host, port, path)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        command = line.split()
        if command[0] == b"open":
            # Open at the given rate, in batches of 50: the listener's backlog is not the test.
            n, rate = int(command[1]), float(command[2])
            while n > 0:
                streams.open(min(n, 50))
                n -= 50
                await asyncio.sleep(50 / rate)
        elif command[0] == b"close":
            for task in list(streams.tasks):
                task.cancel()
            await asyncio.sleep(0.5)
        print(json.dumps(streams.state()), flush=True)


# --- the run ----------------------------------------------------------------------------


def memory(pid):
    """The gateway's memory (KiB): VmRSS, PSS, and resident KiB per kind of mapping."""
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    rollup = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                rollup[parts[0][:-1]] = int(parts[1])
    # Resident KiB by mapping kind: the big reservations are wasmtime's pools.
    kinds = {}
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and not parts[0].endswith(":"):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                size = end - start
                name = parts[5] if len(parts) > 5 else ""
                if name.startswith("/memfd:"):
                    current = "memfd image (CoW data)"
                elif name == "[heap]":
                    current = "heap"
                elif name.startswith("["):
                    current = name
                elif name:
                    current = "files (binary, libraries)"
                elif size >= 1 << 40:
                    current = "anon >= 1 TiB (linear-memory pool)"
                elif size >= 1 << 30:
                    current = "anon >= 1 GiB (pools: stacks, tables, memories)"
                elif size >= 64 << 20:
                    current = "anon 64 MiB-1 GiB (malloc arenas, pools)"
                else:
                    current = "anon < 64 MiB"
                if current.startswith("anon") and parts[1].startswith("rw"):
                    # Pool slots become separate mappings once made accessible: group the
                    # read-write ones by size (a linear memory, an async stack, a table).
                    current = f"anon rw mappings of {size >> 10} KiB"
                kinds.setdefault(current, {"rss": 0, "mappings": 0, "size_gib": 0.0})
                kinds[current]["mappings"] += 1
                kinds[current]["size_gib"] += size / (1 << 30)
            elif parts[0] == "Rss:" and current:
                kinds[current]["rss"] += int(parts[1])
    for k in kinds.values():
        k["size_gib"] = round(k["size_gib"], 2)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "pss_kib": rollup.get("Pss"),
        "anon_kib": int(status["RssAnon"].split()[0]),
        "shmem_kib": int(status["RssShmem"].split()[0]),
        "file_kib": int(status["RssFile"].split()[0]),
        "threads": int(status["Threads"]),
        "page_tables_kib": int(status["VmPTE"].split()[0]),
        "mappings": sum(1 for _ in open(f"/proc/{pid}/maps")),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "cpu_s": round((int(fields[11]) + int(fields[12])) / ticks, 2),
        "by_mapping_kib": kinds,
    }


def metrics(addr):
    """Executions in flight and requests not admitted (queue timeout, shutdown), from /metrics."""
    import urllib.request
    request = urllib.request.Request(f"http://{addr}/metrics",
                                     headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    gauges = {"in_flight": 0, "not_admitted": 0}
    with urllib.request.urlopen(request, timeout=30) as response:
        for line in response.read().decode().splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("openai_connector_in_flight_requests"):
                gauges["in_flight"] += int(float(value))
            elif name.startswith("openai_connector_not_admitted_total"):
                gauges["not_admitted"] += int(float(value))
    return gauges


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--binary", default=os.path.join(target, "release", "openai-connector"))
    parser.add_argument("--steps", default="1000,4000,8000")
    parser.add_argument("--settings", default=None, help="settings JSON for serve")
    parser.add_argument("--settle", type=float, default=4.0,
                        help="seconds to wait at a step once every stream has its head")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="streams opened per second")
    parser.add_argument("--deadline", type=float, default=300.0, help="whole run, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object per step")
    parser.add_argument("--smaps", default=None, help="copy /proc/PID/smaps here at each step")
    parser.add_argument("mode", nargs="?", default="run", help=argparse.SUPPRESS)
    parser.add_argument("mode_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_nofile()
    if args.mode == "upstream":
        asyncio.run(upstream_main(float(args.mode_args[0])))
        return
    if args.mode == "clients":
        host, port, path = args.mode_args
        asyncio.run(clients_main(host, int(port), path))
        return
    run(args)


def run(args):
    steps = [int(s) for s in args.steps.split(",")]
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary} not built: cargo build --release -p openai-connector-harness")
    started = time.monotonic()
    deadline = started + args.deadline
    work = tempfile.mkdtemp(prefix="serve-streams-")
    children = []

    def stop_all():
        for p in reversed(children):
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()

    signal.signal(signal.SIGALRM, lambda *_: (stop_all(), sys.exit("deadline passed")))
    signal.alarm(int(args.deadline) + 1)
    try:
        me = [sys.executable, os.path.abspath(__file__)]
        upstream = subprocess.Popen(me + ["upstream", str(args.deadline)], stdout=subprocess.PIPE)
        children.append(upstream)
        uport = int(upstream.stdout.readline())
        os.mkdir(os.path.join(work, "connectors"))
        with open(os.path.join(work, "connectors", "held.json"), "w") as f:
            json.dump({"name": "Held", "config": {"apiProvider": "OpenAI",
                       "apiUrl": f"http://127.0.0.1:{uport}/v1/chat/completions"},
                       "secrets": {"apiKey": "sk-held-streams"}}, f)
        command = [args.binary, "serve", "--connectors", os.path.join(work, "connectors"),
                   "--listen", "127.0.0.1:0"]
        if args.settings:
            with open(os.path.join(work, "settings.json"), "w") as f:
                f.write(args.settings)
            command += ["--settings", os.path.join(work, "settings.json")]
        env = dict(os.environ, OPENAI_CONNECTOR_ADMIN_TOKEN=ADMIN_TOKEN)

        def start_serve():
            err = open(os.path.join(work, "serve.err"), "w+")
            serve = subprocess.Popen(command, stderr=err, env=env)
            children.append(serve)
            while time.monotonic() < deadline:
                if serve.poll() is not None:
                    err.seek(0)
                    sys.exit(f"serve exited: {err.read()}")
                err.seek(0)
                for line in err:
                    if line.startswith("listening on "):
                        return serve, line.split()[-1].removeprefix("http://")
                time.sleep(0.1)
            sys.exit("serve did not start in time")

        # A first start fills the compiled-code cache: the measured process then starts as a
        # deployed one does, without the compiler's memory.
        warm, _ = start_serve()
        warm.send_signal(signal.SIGKILL)
        warm.wait()
        serve, addr = start_serve()
        host, port = addr.rsplit(":", 1)
        clients = subprocess.Popen(
            me + ["clients", host, port, "/connectors/held/v1/chat/completions"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(clients)

        def ask(line):
            clients.stdin.write(line + "\n")
            clients.stdin.flush()
            return json.loads(clients.stdout.readline())

        time.sleep(0.5)
        idle = memory(serve.pid)
        print(f"serve {args.binary}, settings {args.settings or '(none)'}")
        print(f"idle: RSS {idle['rss_kib'] / 1024:.1f} MiB, PSS {idle['pss_kib'] / 1024:.1f} MiB")
        results = []
        opened = 0
        for step in steps:
            ask(f"open {step - opened} {args.rate}")
            opened = step
            # Wait until every stream has its head (or failed), then let them settle.
            while time.monotonic() < deadline:
                s = ask("state")
                if s["heads"] + sum(s["failed"].values()) >= step:
                    break
                time.sleep(0.5)
            time.sleep(args.settle)
            s = ask("state")
            m = memory(serve.pid)
            if args.smaps:
                os.makedirs(args.smaps, exist_ok=True)
                with open(f"/proc/{serve.pid}/smaps") as src, open(
                        os.path.join(args.smaps, f"smaps-{step}"), "w") as dst:
                    dst.write(src.read())
            gauges = metrics(addr)
            per_stream = (m["rss_kib"] - idle["rss_kib"]) / max(s["receiving"], 1)
            results.append({"step": step, **s, **gauges, **m,
                            "rss_per_stream_kib": round(per_stream, 1)})
            if args.json:
                print(json.dumps(results[-1]), flush=True)
            else:
                print(f"--- {step} streams: {s['receiving']} receiving, {s['heads']} heads "
                      f"(p50 {s['head_p50_ms']} ms, max {s['head_max_ms']} ms), failed "
                      f"{s['failed'] or 0}; serve: {gauges['in_flight']} executions in flight, "
                      f"{gauges['not_admitted']} not admitted")
                print(f"    RSS {m['rss_kib'] / 1024:.1f} MiB ({per_stream:.1f} KiB per stream "
                      f"over idle), PSS {m['pss_kib'] / 1024:.1f} MiB, anon "
                      f"{m['anon_kib'] / 1024:.1f} MiB, shmem {m['shmem_kib'] / 1024:.1f} MiB, "
                      f"file {m['file_kib'] / 1024:.1f} MiB; page tables "
                      f"{m['page_tables_kib'] / 1024:.1f} MiB; {m['mappings']} mappings, "
                      f"{m['fds']} fds, {m['threads']} threads, {m['cpu_s']} s CPU")
                top = sorted(m["by_mapping_kib"].items(), key=lambda kv: -kv[1]["rss"])
                for kind, k in top[:8]:
                    if k["rss"] >= 512:
                        print(f"      {k['rss'] / 1024:9.1f} MiB  {kind} ({k['mappings']} "
                              f"mappings, {k['size_gib']} GiB)")
                sys.stdout.flush()
            if s["receiving"] < step:
                print(f"    stopping: only {s['receiving']} of {step} streams receive")
                break
        # The streams end (their clients leave, C68): what does the process keep?
        ask("close")
        time.sleep(args.settle + 2)
        m = memory(serve.pid)
        gauges = metrics(addr)
        print(f"--- after the clients left: {gauges['in_flight']} executions in flight; RSS "
              f"{m['rss_kib'] / 1024:.1f} MiB, PSS {m['pss_kib'] / 1024:.1f} MiB, anon "
              f"{m['anon_kib'] / 1024:.1f} MiB, shmem {m['shmem_kib'] / 1024:.1f} MiB")
        results.append({"step": "after", **gauges, **m})
        if args.json:
            print(json.dumps(results[-1]), flush=True)
        clients.stdin.close()
        return results
    finally:
        stop_all()
        for name in os.listdir(os.path.join(work, "connectors")) if os.path.isdir(
                os.path.join(work, "connectors")) else []:
            os.remove(os.path.join(work, "connectors", name))
        subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
