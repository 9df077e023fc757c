"""Drives `openai-connector serve` with the official OpenAI Python SDK.

Usage: openai_client.py BASE_URL API_KEY
Prints one JSON object: what the SDK parsed from a non-streaming and a streaming chat
completion, and how it reported a failing stream. The Rust test asserts on it
(tests/all/serve.rs). No pytest: plain Python, exit 1 on an unexpected exception.
"""

import json
import sys

import openai


def main() -> None:
    base_url, api_key = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
    out = {"sdk_version": openai.__version__}

    completion = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "plain"}]
    )
    out["plain"] = {
        "id": completion.id,
        "content": completion.choices[0].message.content,
        "finish_reason": completion.choices[0].finish_reason,
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
    }

    deltas = []
    usage = None
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "stream"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
    out["stream"] = {"deltas": deltas, "usage": usage}

    # A stream the upstream breaks after the first chunk: the SDK raises APIError.
    received = []
    try:
        for chunk in client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "reset"}], stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
        out["broken_stream"] = {"error": None, "received": received}
    except openai.APIError as e:
        out["broken_stream"] = {"error": type(e).__name__, "message": e.message, "received": received}

    # An upstream HTTP error: the SDK's typed exception with the upstream status.
    try:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "limit"}]
        )
        out["http_error"] = None
    except openai.APIStatusError as e:
        out["http_error"] = {"error": type(e).__name__, "status": e.status_code, "message": e.message}

    # A wrong token: 401 from the gateway itself.
    try:
        openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "plain"}]
        )
        out["bad_token"] = None
    except openai.AuthenticationError as e:
        out["bad_token"] = {"status": e.status_code}

    print(json.dumps(out))


if __name__ == "__main__":
    main()
