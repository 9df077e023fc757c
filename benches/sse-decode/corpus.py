#!/usr/bin/env python3
"""Writes an OpenAI-shaped SSE stream for the whole-process `sse decode` bench (run.py).

    python3 benches/sse-decode/corpus.py OUT [BYTES]

The stream is the `chat` corpus of benches/sse.rs (module `corpus`) at another size: a role
chunk, `chat.completion.chunk` events with one to three content pieces each (JSON escapes and
non-ASCII text included, ~270 bytes per event), a finish chunk, a usage chunk and
`data: [DONE]`. The same splitmix64 generator and seed, so the first events are the same.
BYTES defaults to 64 MiB and is bounded (at most 1 GiB).
"""

import sys

MASK = (1 << 64) - 1
DEFAULT_BYTES = 64 * 1024 * 1024
MAX_BYTES = 1024 * 1024 * 1024

# As in benches/sse.rs: pieces as they appear inside a JSON string, escapes included.
PIECES = [
    " the", " model", " stream", " of", " tokens", ",", ".", " and", " a", " connector",
    " Kibana", " response", " with", " data", " 42", "\\n", "\\n\\n", " \\\"quoted\\\"",
    " café", " über", " —", " 😀", " `code`", " **bold**", "ing", " is",
]
PIECES = [p.encode() for p in PIECES]

HEAD = (
    b'data: {"id":"chatcmpl-C3ZbJbEo8y2Jt4aXlT6rXpRzGsJmQ","object":"chat.completion.chunk",'
    b'"created":1767225600,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_cbf1785567",'
    b'"choices":[{"index":0,"delta":{'
)
TAIL = b'},"logprobs":null,"finish_reason":null}]}'
END = (
    b'data: {"id":"chatcmpl-C3ZbJbEo8y2Jt4aXlT6rXpRzGsJmQ","object":"chat.completion.chunk",'
    b'"created":1767225600,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_cbf1785567",'
    b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-C3ZbJbEo8y2Jt4aXlT6rXpRzGsJmQ","object":"chat.completion.chunk",'
    b'"created":1767225600,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_cbf1785567",'
    b'"choices":[],"usage":{"prompt_tokens":1017,"completion_tokens":52311,"total_tokens":53328,'
    b'"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":'
    b'{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,'
    b'"rejected_prediction_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)


class SplitMix64:
    """benches/sse.rs's `Rng`."""

    def __init__(self, seed):
        self.state = seed

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: corpus.py OUT [BYTES]")
    target = int(sys.argv[2]) if len(sys.argv) == 3 else DEFAULT_BYTES
    if not 0 < target <= MAX_BYTES:
        sys.exit(f"corpus.py: BYTES must be between 1 and {MAX_BYTES}, got {target}")
    rng = SplitMix64(0x5EED0F55E0000001)
    parts = [HEAD, b'"role":"assistant","content":"","refusal":null', TAIL, b"\n\n"]
    size = sum(len(p) for p in parts)
    head = HEAD + b'"content":"'
    tail = b'"' + TAIL + b"\n\n"
    while size < target:
        n = 1 + rng.below(3)
        content = b"".join(PIECES[rng.below(len(PIECES))] for _ in range(n))
        event = head + content + tail
        parts.append(event)
        size += len(event)
    parts.append(END)
    with open(sys.argv[1], "wb") as out:
        out.write(b"".join(parts))


if __name__ == "__main__":
    main()
