"""Drives `openai-connector serve`'s Responses, embeddings and models routes with the official
OpenAI Python SDK.

Usage: openai_responses_client.py BASE_URL API_KEY CALL...
Runs each CALL (names below) against BASE_URL and prints one JSON object, CALL -> what the SDK
returned (or raised). The Rust test (tests/all/responses_api.rs) scripts the upstream by the
`input` text, which is the CALL's name, and asserts on the output. No pytest: plain Python,
exit 1 on an unexpected exception.
"""

import json
import sys

import openai


def error_of(e: openai.APIError) -> dict:
    out = {"error": type(e).__name__, "message": e.message}
    if isinstance(e, openai.APIStatusError):
        out["status"] = e.status_code
    return out


def plain(client, name, model):
    kwargs = {"input": name, "instructions": "Be brief."}
    if model:
        kwargs["model"] = model
    try:
        r = client.responses.create(**kwargs)
    except openai.APIError as e:
        return error_of(e)
    return {
        "id": r.id,
        "status": r.status,
        "output_text": r.output_text,
        "usage": [r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens],
    }


def stream(client, name, model):
    """Iterates the typed events of a streamed response."""
    events, deltas, arguments = [], [], []
    final = None
    out = {}
    try:
        for event in client.responses.create(model=model, input=name, stream=True):
            events.append([type(event).__name__, event.type])
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.function_call_arguments.delta":
                arguments.append(event.delta)
            elif event.type in ("response.completed", "response.failed", "response.incomplete"):
                final = event.response
            elif event.type == "error":
                out["error_event"] = {"code": event.code, "message": event.message}
        out["raised"] = None
    except openai.APIError as e:
        out["raised"] = error_of(e)
    out["events"] = events
    out["deltas"] = deltas
    out["arguments"] = arguments
    if final is not None:
        out["final"] = {
            "status": final.status,
            "output": [item.to_dict() for item in final.output],
            "usage": None
            if final.usage is None
            else [final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens],
            "error": None if final.error is None else final.error.to_dict(),
        }
    return out


def embeddings(client, encoding_format):
    kwargs = {"model": "text-embedding-3-small", "input": ["alpha", "beta"]}
    if encoding_format:
        kwargs["encoding_format"] = encoding_format
    try:
        r = client.embeddings.create(**kwargs)
    except openai.APIError as e:
        return error_of(e)
    return {
        "model": r.model,
        "vectors": [[round(x, 4) for x in d.embedding] for d in r.data],
        "usage": [r.usage.prompt_tokens, r.usage.total_tokens],
    }


def models(client):
    try:
        return [[m.id, m.object, m.owned_by] for m in client.models.list()]
    except openai.APIError as e:
        return error_of(e)


def main() -> None:
    base_url, api_key, calls = sys.argv[1], sys.argv[2], sys.argv[3:]
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
    out = {"sdk_version": openai.__version__}
    for call in calls:
        if call.startswith("stream_"):
            out[call] = stream(client, call, "gpt-4.1")
        elif call == "plain":
            out[call] = plain(client, call, "gpt-4.1")
        elif call == "plain_no_model":
            out[call] = plain(client, "plain", None)
        elif call == "embeddings":
            # The SDK asks for base64 and decodes it.
            out[call] = embeddings(client, None)
        elif call == "embeddings_float":
            out[call] = embeddings(client, "float")
        elif call == "models":
            out[call] = models(client)
        else:
            raise SystemExit(f"unknown call {call}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
