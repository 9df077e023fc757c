#!/usr/bin/env python3
"""Whole-process `openai-connector sse decode` against Node's `eventsource-parser` and floors.

    cargo build --release -p openai-connector-harness --bin openai-connector
    (cd benches/node && npm ci)
    python3 benches/sse-decode/run.py [--before BIN] [--rounds N] [--bytes N]

Writes an OpenAI-shaped corpus (corpus.py, 64 MiB by default) to a temporary directory, builds
floor.rs with `rustc -C opt-level=3` into <target>/sse-decode/, then runs every row once per
round, all rows back to back in the same order, each process with stdout to /dev/null, after
one warm-up round that is not counted (it fills the compiled-code cache and the page cache).
Prints the median wall time of each row over the rounds, its median user + system CPU time,
and the ratios of the medians (wall time: the targets; CPU time: for comparison, as `sse
decode` writes its lines on a second thread). `--before BIN` adds the rows of another build
of the CLI (e.g. the one on main), run in the same rounds. Before timing, the outputs are
compared once: the CLI's event lines and Node's must be identical, and with `--before`, both
builds' lines and `--chat` output too.

Bounded: at most 20 rounds, a corpus of at most 1 GiB, and every process is killed after
120 s.
"""

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TIMEOUT_S = 120


def target_dir():
    return (ROOT / os.environ.get("CARGO_TARGET_DIR", "target")).resolve()


def run_timed(argv):
    """Wall seconds and user + system CPU seconds of one run of `argv`, stdout to /dev/null."""
    start = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(argv, stdout=devnull, stderr=subprocess.PIPE)
        deadline = start + TIMEOUT_S
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                sys.exit(f"run.py: {argv} ran for more than {TIMEOUT_S} s")
            time.sleep(0.0005)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read()
    proc.stderr.close()
    if proc.returncode != 0:
        sys.exit(f"run.py: {argv} exited with {proc.returncode}: {stderr.decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime


def output_digest(argv):
    out = subprocess.run(argv, stdout=subprocess.PIPE, check=True, timeout=TIMEOUT_S).stdout
    return hashlib.sha256(out).hexdigest(), len(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default=str(target_dir() / "release" / "openai-connector"))
    parser.add_argument("--before", help="another build of the CLI, measured in the same rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bytes", type=int, default=64 * 1024 * 1024)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20:
        sys.exit("run.py: --rounds must be between 1 and 20")

    out_dir = target_dir() / "sse-decode"
    out_dir.mkdir(parents=True, exist_ok=True)
    floor = out_dir / "floor"
    subprocess.run(
        ["rustc", "--edition", "2021", "-C", "opt-level=3", "-o", str(floor), str(HERE / "floor.rs")],
        check=True,
        timeout=TIMEOUT_S,
    )
    node_script = str(ROOT / "benches" / "node" / "sse-decode.mjs")

    with tempfile.TemporaryDirectory(prefix="sse-decode-bench-") as tmp:
        corpus = Path(tmp) / "corpus.sse"
        empty = Path(tmp) / "empty.sse"
        empty.write_bytes(b"")
        subprocess.run(
            [sys.executable, str(HERE / "corpus.py"), str(corpus), str(args.bytes)],
            check=True,
            timeout=TIMEOUT_S,
        )
        size = corpus.stat().st_size

        def cli(binary, *extra):
            return [binary, "sse", "decode", *extra]

        rows = [
            ("cat FILE (read floor)", ["cat", str(corpus)]),
            ("floor.rs (the output job without SSE, no wasm)", [str(floor), str(corpus)]),
            ("node -e '' (Node start)", ["node", "-e", ""]),
            ("CLI start + instantiate (empty file)", cli(args.bin, str(empty))),
            ("CLI start + instantiate, --chat (empty file)", cli(args.bin, "--chat", str(empty))),
        ]
        if args.before:
            rows += [
                ("before: sse decode FILE", cli(args.before, str(corpus))),
                ("before: sse decode --chat FILE", cli(args.before, "--chat", str(corpus))),
            ]
        rows += [
            ("sse decode FILE", cli(args.bin, str(corpus))),
            ("sse decode --chat FILE", cli(args.bin, "--chat", str(corpus))),
            ("node: eventsource-parser, JSON lines out", ["node", node_script, str(corpus)]),
            ("node: eventsource-parser + JSON.parse", ["node", node_script, str(corpus), "--json"]),
        ]

        # The outputs agree before anything is timed.
        events = output_digest(cli(args.bin, str(corpus)))
        node = output_digest(["node", node_script, str(corpus)])
        if events != node:
            sys.exit(f"run.py: sse decode wrote {events}, Node {node}")
        if args.before:
            for extra in ([], ["--chat"]):
                now = output_digest(cli(args.bin, *extra, str(corpus)))
                then = output_digest(cli(args.before, *extra, str(corpus)))
                if now != then:
                    sys.exit(f"run.py: sse decode {extra} wrote {now}, before {then}")

        for _, argv in rows:  # warm-up
            run_timed(argv)
        times = {name: [] for name, _ in rows}
        for _ in range(args.rounds):
            for name, argv in rows:
                times[name].append(run_timed(argv))

    print(f"corpus: {size} bytes, {args.rounds} rounds (medians), output to /dev/null")
    print("| row | wall ms | user+sys ms | MB/s |")
    print("|---|---:|---:|---:|")
    median = {}
    for name, _ in rows:
        wall = statistics.median(t[0] for t in times[name])
        cpu = statistics.median(t[1] for t in times[name])
        median[name] = wall
        print(f"| {name} | {wall * 1e3:.1f} | {cpu * 1e3:.1f} | {size / 1e6 / wall:,.0f} |")
    cpu = {name: statistics.median(t[1] for t in times[name]) for name, _ in rows}
    node_events = "node: eventsource-parser, JSON lines out"
    node_json = "node: eventsource-parser + JSON.parse"
    print()
    for prefix in (["before: "] if args.before else []) + [""]:
        events = f"{prefix}sse decode FILE"
        chat = f"{prefix}sse decode --chat FILE"
        print(
            f"{prefix or 'now: '}sse decode {median[node_events] / median[events]:.2f}x "
            f"eventsource-parser (target 10x; CPU time {cpu[node_events] / cpu[events]:.2f}x), "
            f"--chat {median[node_json] / median[chat]:.2f}x eventsource-parser + JSON.parse "
            f"(target 5x; CPU time {cpu[node_json] / cpu[chat]:.2f}x)"
        )

if __name__ == "__main__":
    main()
