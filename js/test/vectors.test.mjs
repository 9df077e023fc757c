// The shared test vectors (../tests/vectors/, format in its README) against the jco-transpiled
// component, through the raw WIT bindings: every expected text is compared byte for byte with
// what the component returns. tests/vectors.rs runs the same files against the Rust modules.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';

import { component, ResponsesDecoder, SseDecoder, SseError } from '../src/index.js';

const { validation, requests, responses, sse } = component;
const dir = new URL('../../tests/vectors/', import.meta.url);
const counts = {};

after(() => {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const summary = Object.entries(counts)
    .map(([kind, n]) => `${kind} ${n}`)
    .join(', ');
  console.log(`vectors (js): ${total} (${summary})`);
});

const files = (kind, ext) =>
  readdirSync(new URL(`${kind}/`, dir))
    .filter((f) => f.endsWith(ext))
    .sort();
const readJson = (path) => JSON.parse(readFileSync(new URL(path, dir), 'utf8'));

function jsonText(obj, key) {
  const hasValue = key in obj;
  const hasText = `${key}_json` in obj;
  assert.ok(hasValue !== hasText, `give exactly one of ${key} or ${key}_json`);
  return hasText ? obj[`${key}_json`] : JSON.stringify(obj[key]);
}

function bytes(obj, key) {
  if (typeof obj[key] === 'string') return new TextEncoder().encode(obj[key]);
  assert.equal(typeof obj[`${key}_base64`], 'string', `give ${key} or ${key}_base64`);
  return new Uint8Array(Buffer.from(obj[`${key}_base64`], 'base64'));
}

function input(c) {
  const conn = c.connector;
  const s = c.settings ?? {};
  const secretsJson = jsonText(conn, 'secrets');
  let secrets = [];
  try {
    const parsed = JSON.parse(secretsJson);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
      secrets = Object.values(parsed).filter((v) => typeof v === 'string' && [...v].length >= 8);
    }
  } catch {
    // Not JSON: no secret to look for.
  }
  return {
    definition: {
      id: conn.id ?? 'vector',
      name: conn.name ?? 'Vector',
      configJson: jsonText(conn, 'config'),
      secretsJson,
    },
    settings: {
      allowedHosts: s.allowed_hosts ?? ['*'],
      responseTimeoutMs: BigInt(s.response_timeout_ms ?? 60000),
      maxResponseContentLength: BigInt(s.max_response_content_length ?? 1048576),
      retry: { maxAttempts: 1, initialDelayMs: 250n, maxDelayMs: 20000n },
    },
    secrets,
  };
}

function assertNoSecret(secrets, text) {
  for (const secret of secrets) {
    assert.ok(!text.includes(secret), `a secret value appears in the error text ${JSON.stringify(text)}`);
  }
}

/** The payload of a WIT error result (jco throws it as a ComponentError). */
function witError(fn) {
  try {
    return { ok: fn() };
  } catch (e) {
    if (e && typeof e === 'object' && 'payload' in e) return { err: e.payload };
    throw e;
  }
}

function checkErrors(got, want, secrets) {
  assert.deepEqual(got.config, want.config, 'config errors');
  assert.deepEqual(got.secrets, want.secrets, 'secrets errors');
  for (const line of [...got.config, ...got.secrets]) assertNoSecret(secrets, line);
}

function checkFailure(got, want, secrets = []) {
  assert.equal(got.serviceMessage, want.service_message, 'service_message');
  assert.equal(got.retry, want.retry, 'retry');
  assert.equal(got.kind.tag, want.kind, 'kind');
  if (got.kind.tag === 'http') assert.equal(got.kind.val, want.upstream_status, 'kind http status');
  assert.equal(got.upstreamStatus ?? null, want.upstream_status, 'upstream_status');
  assertNoSecret(secrets, got.serviceMessage);
}

const b64 = (der) => Buffer.from(der).toString('base64');
const tlsJson = (tls) =>
  tls === undefined
    ? null
    : {
        verification: tls.verification,
        identity:
          tls.identity === undefined
            ? null
            : {
                key_format: tls.identity.keyFormat,
                chain_der_base64: tls.identity.chainDer.map(b64),
                key_der_bytes: tls.identity.keyDer.length,
              },
        ca_der_base64: tls.caDer.map(b64),
      };

const usageJson = (u) => ({
  prompt_tokens: Number(u.promptTokens),
  completion_tokens: Number(u.completionTokens),
  total_tokens: Number(u.totalTokens),
  source: u.source,
});

const runners = {
  validation(c) {
    const { definition, settings, secrets } = input(c);
    const got = witError(() => validation.validate(definition, settings));
    if (c.expect.valid) {
      assert.ok(got.ok, `invalid, expected valid: ${JSON.stringify(got.err)}`);
      assert.equal(got.ok.prepared.provider, c.expect.valid.provider, 'provider');
      assert.equal(got.ok.connectorJson, c.expect.valid.connector_json, 'connector_json');
      assert.deepEqual(tlsJson(got.ok.tls), c.expect.valid.tls, 'tls');
    } else {
      assert.ok(got.err, `valid, expected errors: ${got.ok?.connectorJson}`);
      checkErrors(got.err, c.expect.errors, secrets);
    }
  },
  requests(c) {
    const { definition, settings, secrets } = input(c);
    const got = witError(() => requests.build(definition, settings, jsonText(c, 'params')));
    if (c.expect.invalid_connector) {
      assert.equal(got.err?.tag, 'invalid-connector', `expected an invalid connector: ${JSON.stringify(got)}`);
      checkErrors(got.err.val, c.expect.invalid_connector, secrets);
    } else if (c.expect.refused) {
      assert.equal(got.err?.tag, 'refused', `expected a refusal, got ${JSON.stringify(got.err ?? 'a request')}`);
      checkFailure(got.err.val, c.expect.refused, secrets);
    } else {
      assert.ok(got.ok, `expected a request: ${JSON.stringify(got.err)}`);
      const want = c.expect.request;
      const plan = got.ok;
      assert.equal(plan.subAction, want.sub_action, 'sub_action');
      assert.equal(plan.streaming, want.streaming, 'streaming');
      assert.equal(plan.request.method, want.method, 'method');
      assert.equal(plan.request.url, want.url, 'url');
      assert.deepEqual(plan.request.headers, want.headers, 'headers');
      assert.deepEqual(Buffer.from(plan.request.body), Buffer.from(bytes(want, 'body')), 'body');
      assert.equal(plan.totalTimeoutMs, BigInt(want.total_timeout_ms), 'total_timeout_ms');
      assert.equal(
        plan.idleTimeoutMs,
        want.idle_timeout_ms === null ? undefined : BigInt(want.idle_timeout_ms),
        'idle_timeout_ms',
      );
    }
  },
  responses(c) {
    const got = witError(() => responses.mapSuccess(c.sub_action, bytes(c, 'body')));
    if (c.expect.failure) {
      assert.ok(got.err, `mapped, expected a failure: ${got.ok?.[0]}`);
      checkFailure(got.err, c.expect.failure);
    } else {
      assert.ok(got.ok, `failed, expected data: ${JSON.stringify(got.err)}`);
      const [data, usage] = got.ok;
      assert.equal(data, c.expect.data, 'data');
      assert.deepEqual(usageJson(usage), c.expect.usage, 'usage');
    }
  },
  errors(c) {
    checkFailure(responses.mapHttpError(c.status, bytes(c, 'body')), c.expect);
  },
};

for (const [kind, run] of Object.entries(runners)) {
  describe(kind, () => {
    for (const file of files(kind, '.json')) {
      const { cases } = readJson(`${kind}/${file}`);
      assert.ok(Array.isArray(cases) && cases.length > 0, `${kind}/${file}: cases must be a non-empty array`);
      cases.forEach((c, i) => {
        counts[kind] = (counts[kind] ?? 0) + 1;
        test(`${file} #${i} ${c.name}`, () => run(c));
      });
    }
  });
}

/** Events as compared: retry in decimal (README). */
const eventRow = (e) => ({
  type: e.eventType,
  data: e.data,
  id: e.id ?? null,
  retry: e.retry === undefined ? null : e.retry.toString(),
});
const expectedRow = (e) => ({ ...e, retry: e.retry === null ? null : String(e.retry) });

/** Decodes the UTF-8 bytes the component returns (WIT 0.3.0); `fatal` checks they are valid. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Feeds `chunks` to the package's `SseDecoder` (WIT `feed-raw-spans`), then finishes. */
function decodeRawSpans(chunks, max) {
  const decoder = new SseDecoder({ maxEventBytes: max });
  const row = (e) => ({ type: e.type, data: e.data, id: e.id ?? null, retry: e.retry === null ? null : String(e.retry) });
  const events = [];
  try {
    for (const chunk of chunks) events.push(...decoder.feed(chunk).map(row));
    events.push(...decoder.finish().map(row));
    return { events, error: null };
  } catch (e) {
    if (!(e instanceof SseError)) throw e;
    return { events, error: e.message };
  } finally {
    decoder[Symbol.dispose]();
  }
}

/** Feeds `chunks` to a new decoder, then finishes. */
function decode(chunks, max) {
  const decoder = new sse.Decoder(max);
  const feed = (chunk) => decoder.feed(chunk);
  const events = [];
  try {
    for (const chunk of chunks) {
      const got = witError(() => feed(chunk));
      if (got.err !== undefined) return { events, error: got.err };
      events.push(...got.ok.map(eventRow));
    }
    const got = witError(() => decoder.finish());
    if (got.err !== undefined) return { events, error: got.err };
    events.push(...got.ok.map(eventRow));
    return { events, error: null };
  } finally {
    decoder[Symbol.dispose]?.();
  }
}

const oneByteAtATime = (input) => Array.from(input, (_, i) => input.subarray(i, i + 1));

describe('sse', () => {
  for (const file of files('sse', '.sse')) {
    counts.sse = (counts.sse ?? 0) + 1;
    test(file, () => {
      const input = new Uint8Array(readFileSync(new URL(`sse/${file}`, dir)));
      const expect = readJson(`sse/${file.replace(/\.sse$/, '.json')}`);
      const max = expect.max_event_bytes ?? 1048576;
      const want = expect.events.map(expectedRow);

      const bytewise = decode(oneByteAtATime(input), max);
      assert.deepEqual(bytewise.events, want, 'events, one byte at a time');
      assert.equal(bytewise.error, expect.error, 'error, one byte at a time');

      const whole = decode([input], max);
      assert.deepEqual(whole.events, want, 'events, whole');
      assert.equal(whole.error, expect.error, 'error, whole');

      // The package's SseDecoder gives `retry` as a JavaScript number (exact below 2^53).
      const wantNumbers = want.map((e) => ({ ...e, retry: e.retry === null ? null : String(Number(e.retry)) }));
      for (const [how, chunks] of [['one byte at a time', oneByteAtATime(input)], ['whole', [input]]]) {
        const spans = decodeRawSpans(chunks, max);
        assert.deepEqual(spans.events, wantNumbers, `events, feedRawSpans ${how}`);
        assert.equal(spans.error, expect.error, `error, feedRawSpans ${how}`);
      }
    });
  }
});

describe('chat', () => {
  for (const file of files('chat', '.sse')) {
    counts.chat = (counts.chat ?? 0) + 1;
    test(file, () => {
      const input = new Uint8Array(readFileSync(new URL(`chat/${file}`, dir)));
      const expect = readJson(`chat/${file.replace(/\.sse$/, '.json')}`);
      const decoded = decode([input], expect.max_event_bytes ?? 1048576);
      assert.equal(decoded.error, null, 'the SSE input decodes');
      // sse.chat-stream: each event's type and data (C96a needs the type).
      {
        const stream = new sse.ChatStream();
        const deltas = [];
        const errors = [];
        for (const event of decoded.events) {
          const got = witError(() => stream.pushEvent(event.type, event.data));
          if (got.err !== undefined) errors.push(got.err);
          else deltas.push(...got.ok);
        }
        assert.deepEqual(deltas, expect.deltas, 'deltas');
        assert.deepEqual(errors, expect.push_errors, 'push errors');
        assert.equal(stream.finish(), expect.final, 'final');
      }
      // sse.chat-decoder: bytes in, delta lines out, whole and one byte at a time.
      for (const [how, size] of [['whole', input.length || 1], ['bytewise', 1]]) {
        const chat = new sse.ChatDecoder(expect.max_event_bytes ?? 1048576);
        let lines = '';
        for (let at = 0; at < input.length; at += size) {
          // WIT 0.3.0: UTF-8 bytes, whole lines each call.
          lines += utf8.decode(chat.feed(input.subarray(at, at + size)));
        }
        chat.finish();
        const want = expect.deltas.map((d) => `${d}\n`).join('');
        assert.equal(lines, want, `deltas, chat decoder ${how}`);
        assert.equal(utf8.decode(chat.completion()), expect.final, `final, chat decoder ${how}`);
      }
    });
  }
});

/** camelCase keys to the vectors' snake_case; a usage loses its `source` (always `reported`). */
function snake(value) {
  if (Array.isArray(value)) return value.map(snake);
  if (value === null || typeof value !== 'object') return value;
  if ('promptTokens' in value) {
    assert.equal(value.source, 'reported');
    return { prompt_tokens: value.promptTokens, completion_tokens: value.completionTokens, total_tokens: value.totalTokens };
  }
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), snake(v)]),
  );
}

/** The package's ResponsesDecoder fed `chunks`: events, assembly and error, as the vectors write them. */
function decodeResponses(chunks, max) {
  const decoder = new ResponsesDecoder({ maxEventBytes: max });
  try {
    const events = [];
    let error = null;
    try {
      for (const chunk of chunks) events.push(...decoder.feed(chunk));
      decoder.finish();
    } catch (e) {
      if (!(e instanceof SseError)) throw e;
      error = e.message;
    }
    return {
      events: snake(events),
      assembly: snake({
        outputText: decoder.outputText(),
        functionCalls: decoder.functionCalls(),
        usage: decoder.usage(),
        end: decoder.end(),
      }),
      error,
    };
  } finally {
    decoder[Symbol.dispose]();
  }
}

describe('responses-stream', () => {
  for (const file of files('responses-stream', '.sse')) {
    counts['responses-stream'] = (counts['responses-stream'] ?? 0) + 1;
    test(file, () => {
      const input = new Uint8Array(readFileSync(new URL(`responses-stream/${file}`, dir)));
      const expect = readJson(`responses-stream/${file.replace(/\.sse$/, '.json')}`);
      const want = {
        output_text: expect.output_text,
        function_calls: expect.function_calls,
        usage: expect.usage,
        end: expect.end,
      };
      for (const [how, chunks] of [['whole', [input]], ['one byte at a time', oneByteAtATime(input)]]) {
        const got = decodeResponses(chunks, expect.max_event_bytes ?? 1048576);
        assert.deepEqual(got.events, expect.events, `events, ${how}`);
        assert.deepEqual(got.assembly, want, `assembly, ${how}`);
        assert.equal(got.error, expect.error, `error, ${how}`);
      }
    });
  }
});
