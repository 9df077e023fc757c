// The idiomatic wrapper (src/index.js) over the transpiled component.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, test } from 'node:test';

import {
  ChatDecoder,
  ChatStream,
  ChatStreamError,
  ConnectorFailure,
  ConnectorValidationError,
  ResponsesDecoder,
  SseDecoder,
  SseError,
  buildRequest,
  component,
  execute,
  mapResponse,
  parseConnector,
} from '../src/index.js';

const API_KEY = 'sk-js-test-secret-5678';
const PRIVATE_KEY_B64 = Buffer.from(
  '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n',
).toString('base64');
const SECRETS = [API_KEY, PRIVATE_KEY_B64];

const openai = (secrets = { apiKey: API_KEY }) => ({
  id: 'my-openai',
  name: 'My OpenAI',
  config: { apiProvider: 'OpenAI', apiUrl: 'https://api.openai.com/v1/chat/completions' },
  secrets,
});

function assertNoSecret(text) {
  for (const secret of SECRETS) assert.ok(!text.includes(secret), `secret in ${JSON.stringify(text)}`);
}

/** Every text an error carries: message, stack, own properties. */
function errorTexts(error) {
  return [error.message, error.stack, JSON.stringify(error), String(error)].join('\n');
}

describe('parseConnector', () => {
  test('a valid connector: Kibana shape, defaults added, no secrets (C9, C16)', () => {
    const parsed = parseConnector(openai());
    assert.equal(parsed.provider, 'open-ai');
    assert.equal(parsed.connector.config.defaultModel, 'gpt-4.1');
    assert.equal(parsed.connector.connector_type_id, '.gen-ai');
    assert.equal(parsed.tls, undefined);
    assert.ok(!parsed.connectorJson.includes(API_KEY));
  });

  test("an invalid connector: every problem, Kibana's lines (C17)", () => {
    const connector = {
      id: 'az',
      name: 'Azure',
      config: { apiProvider: 'Azure OpenAI', apiUrl: 'ftp://h/x', projectId: 'p' },
      secrets: { apiKey: API_KEY, bogus: API_KEY },
    };
    assert.throws(
      () => parseConnector(connector),
      (e) => {
        assert.ok(e instanceof ConnectorValidationError);
        assert.deepEqual(e.lines, [
          'error validating action type config: Unrecognized keys: "projectId"',
          'error validating action type config: Error configuring OpenAI action: Error: URL Error: Invalid protocol',
          'error validating action type secrets: Unrecognized keys: "bogus"',
        ]);
        assert.equal(e.message, e.lines.join('\n'));
        assertNoSecret(errorTexts(e));
        return true;
      },
    );
  });

  test('no secret in the messages of invalid PKI material (C32)', () => {
    const connector = {
      config: { apiProvider: 'Other', apiUrl: 'https://llm.test/v1', defaultModel: 'm' },
      secrets: { apiKey: API_KEY, certificateData: API_KEY, privateKeyData: PRIVATE_KEY_B64, caData: API_KEY },
    };
    assert.throws(
      () => parseConnector(connector),
      (e) => {
        assert.ok(e instanceof ConnectorValidationError);
        assert.ok(e.secrets.length > 0, 'the secrets are reported as invalid');
        assertNoSecret(errorTexts(e));
        return true;
      },
    );
  });

  test('the allow-list of the settings (C11)', () => {
    assert.throws(() => parseConnector(openai(), { allowedHosts: ['llm.internal'] }), {
      name: 'ConnectorValidationError',
      message:
        'error validating action type config: Error configuring OpenAI action: Error: error validating url: target url "https://api.openai.com/v1/chat/completions" is not added to the Kibana config xpack.actions.allowedHosts',
    });
  });

  test('bad arguments name the field', () => {
    assert.throws(() => parseConnector(null), { name: 'TypeError', message: /^connector: expected an object/ });
    assert.throws(() => parseConnector({ config: {}, id: 5 }), { message: 'connector.id: expected a string' });
    assert.throws(() => parseConnector(openai(), { responseTimeout: -1 }), {
      message: 'settings.responseTimeout: expected a non-negative integer',
    });
    assert.throws(() => parseConnector(openai(), { allowedHosts: 'x' }), {
      message: 'settings.allowedHosts: expected an array of strings',
    });
  });
});

describe('buildRequest', () => {
  test('the exact request (E1, C46, C48)', () => {
    const req = buildRequest(openai(), {
      subAction: 'run',
      subActionParams: { body: '{"messages":[{"role":"user","content":"Hi"}]}' },
    });
    assert.equal(req.subAction, 'run');
    assert.equal(req.method, 'POST');
    assert.equal(req.url, 'https://api.openai.com/v1/chat/completions');
    assert.equal(
      new TextDecoder().decode(req.body),
      '{"messages":[{"role":"user","content":"Hi"}],"stream":false,"model":"gpt-4.1"}',
    );
    assert.deepEqual(req.headers[0], ['Authorization', `Bearer ${API_KEY}`]);
    assert.equal(req.totalTimeoutMs, 200000);
    assert.equal(req.idleTimeoutMs, undefined);
  });

  test('refused params: ConnectorFailure with retry false (C34)', () => {
    assert.throws(
      () => buildRequest(openai(), { subAction: 'getDashboard', subActionParams: {} }),
      (e) => {
        assert.ok(e instanceof ConnectorFailure);
        assert.equal(e.retry, false);
        assert.equal(
          e.serviceMessage,
          'Sub action "getDashboard" is not registered. Connector id: my-openai. Connector name: OpenAI. Connector type: .gen-ai',
        );
        return true;
      },
    );
  });

  test('an invalid connector: ConnectorValidationError, no secret (C16, C32)', () => {
    assert.throws(
      () => buildRequest(openai({ apiKey: 5, extra: API_KEY }), { subAction: 'run', subActionParams: { body: '{}' } }),
      (e) => {
        assert.ok(e instanceof ConnectorValidationError);
        assertNoSecret(errorTexts(e));
        return true;
      },
    );
  });
});

describe('responses and embeddings (sub-actions of this project)', () => {
  const azure = {
    id: 'az',
    name: 'Azure',
    config: {
      apiProvider: 'Azure OpenAI',
      apiUrl: 'https://r.openai.azure.com/openai/deployments/gpt-5-mini/chat/completions?api-version=2025-04-01-preview',
    },
    secrets: { apiKey: API_KEY },
  };

  test('the URL derived from apiUrl; Azure names the deployment as model', () => {
    const req = buildRequest(azure, { subAction: 'responses', subActionParams: { body: '{"input":"Hi","stream":true}' } });
    assert.equal(req.subAction, 'responses');
    assert.equal(req.streaming, true);
    assert.equal(req.url, 'https://r.openai.azure.com/openai/responses?api-version=2025-04-01-preview');
    assert.equal(new TextDecoder().decode(req.body), '{"input":"Hi","stream":true,"model":"gpt-5-mini"}');
    assert.deepEqual(req.headers[0], ['api-key', API_KEY]);
    const emb = buildRequest(openai(), { subAction: 'embeddings', subActionParams: { body: '{"input":"x"}' } });
    assert.equal(emb.url, 'https://api.openai.com/v1/embeddings');
    assert.equal(emb.streaming, false);
  });

  test('a URL that cannot be mapped: ConnectorFailure of kind not-mapped', () => {
    const gateway = { ...openai(), config: { apiProvider: 'Other', apiUrl: 'https://gw.example.com/llm', defaultModel: 'm' } };
    assert.throws(
      () => buildRequest(gateway, { subAction: 'responses', subActionParams: { body: '{}' } }),
      (e) => {
        assert.ok(e instanceof ConnectorFailure);
        assert.equal(e.kind, 'not-mapped');
        assert.equal(e.retry, false);
        assert.equal(
          e.serviceMessage,
          "The connector's URL cannot be mapped to the Responses API: apiUrl does not end in /chat/completions",
        );
        return true;
      },
    );
  });

  test('usage: input and output tokens of a response, prompt tokens of embeddings', () => {
    const response = mapResponse({
      subAction: 'responses',
      status: 200,
      body: '{"object":"response","output":[],"usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}',
    });
    assert.deepEqual(response.usage, { promptTokens: 5, completionTokens: 2, totalTokens: 7, source: 'reported' });
    const embeddings = mapResponse({
      subAction: 'embeddings',
      status: 200,
      body: '{"object":"list","data":[],"usage":{"prompt_tokens":3,"total_tokens":3}}',
    });
    assert.deepEqual(embeddings.usage, { promptTokens: 3, completionTokens: 0, totalTokens: 3, source: 'reported' });
  });
});

describe('ResponsesDecoder', () => {
  test('typed events in, assembly out; a decoding error throws SseError after the events before it', () => {
    const decoder = new ResponsesDecoder({ maxEventBytes: 200 });
    const events = decoder.feed(
      'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":"Hi"}\n\n' +
        `data: ${'x'.repeat(300)}\n\n`,
    );
    assert.deepEqual(events, [{ type: 'output-text-delta', outputIndex: 0, contentIndex: 0, delta: 'Hi' }]);
    assert.throws(() => decoder.feed('data: {}\n\n'), (e) => e instanceof SseError && /maximum size of 200 bytes/.test(e.message));
    assert.equal(decoder.outputText(), 'Hi');
    assert.equal(decoder.end(), null);
    assert.equal(decoder.usage(), null);
    decoder[Symbol.dispose]();
  });
});

describe('mapResponse', () => {
  test('2xx: data and reported usage (C39, C107)', () => {
    const body = JSON.stringify({
      choices: [{ message: { role: 'assistant', content: ' Hi ' } }],
      usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
    });
    const mapped = mapResponse({ subAction: 'invokeAI', status: 200, body });
    assert.equal(mapped.status, 'ok');
    assert.equal(mapped.data.message, 'Hi');
    assert.deepEqual(mapped.usage, { promptTokens: 3, completionTokens: 1, totalTokens: 4, source: 'reported' });
  });

  test("non-2xx: Kibana's message (C72)", () => {
    assert.deepEqual(mapResponse({ subAction: 'run', status: 429, body: '{"error":{"message":"slow down"}}' }), {
      status: 'error',
      serviceMessage: 'Status code: 429. Message: API Error: Too Many Requests - slow down',
      retry: true,
      kind: 'http',
      code: null,
      upstreamStatus: 429,
    });
  });

  test('a 2xx body that fails validation is an error result (C69)', () => {
    assert.deepEqual(mapResponse({ subAction: 'run', status: 200, body: '{"id":"x"}' }), {
      status: 'error',
      serviceMessage: 'Response validation failed ([choices]: expected value of type [array] but got [undefined])',
      retry: true,
      kind: 'response-invalid',
      code: null,
      upstreamStatus: null,
    });
  });

  test('bad arguments', () => {
    assert.throws(() => mapResponse({ subAction: 'run', status: 'x' }), { message: /^status: expected/ });
    assert.throws(() => mapResponse({ subAction: 'nope', status: 200, body: '{}' }), {
      message: 'subAction: unknown sub-action "nope"',
    });
  });
});

describe('SseDecoder', () => {
  const input = new TextEncoder().encode(
    '\uFEFFid: 1\r\nevent: delta\ndata: h\u00e9\ndata: llo\r\rretry: 250\ndata: \u{1F600}\n\n: comment\ndata: partial',
  );
  const expected = [
    { type: 'delta', data: 'h\u00e9\nllo', id: '1', retry: null },
    { type: 'message', data: '\u{1F600}', id: '1', retry: 250 },
  ];

  test('fed one byte at a time, multi-byte characters split (C80, C81)', () => {
    const decoder = new SseDecoder();
    const events = [];
    for (let i = 0; i < input.length; i++) events.push(...decoder.feed(input.subarray(i, i + 1)));
    events.push(...decoder.finish());
    assert.deepEqual(events, expected);
  });

  test('fed whole, and as text', () => {
    const decoder = new SseDecoder();
    assert.deepEqual([...decoder.feed(input), ...decoder.finish()], expected);
    const text = new SseDecoder();
    assert.deepEqual([...text.feed(new TextDecoder().decode(input)), ...text.finish()], expected);
  });

  test('an oversize event is an error, and stays one (C91)', () => {
    const decoder = new SseDecoder({ maxEventBytes: 64 });
    assert.deepEqual(decoder.feed('data: small\n\n'), [{ type: 'message', data: 'small', id: null, retry: null }]);
    const big = `data: ${'x'.repeat(100)}\n\n`;
    assert.throws(() => decoder.feed(big), (e) => e instanceof SseError && e.message === 'SSE event exceeds the maximum size of 64 bytes');
    assert.throws(() => decoder.feed('data: again\n\n'), { name: 'SseError', message: 'SSE event exceeds the maximum size of 64 bytes' });
    assert.throws(() => decoder.finish(), { name: 'SseError' });
  });

  test('oversize one byte at a time fails at the byte that crosses the limit', () => {
    const decoder = new SseDecoder({ maxEventBytes: 16 });
    const bytes = new TextEncoder().encode(`data: ${'y'.repeat(40)}`);
    let failedAt = -1;
    for (let i = 0; i < bytes.length; i++) {
      try {
        decoder.feed(bytes.subarray(i, i + 1));
      } catch (e) {
        assert.ok(e instanceof SseError);
        failedAt = i;
        break;
      }
    }
    assert.ok(failedAt > 0 && failedAt <= 17, `failed at byte ${failedAt}`);
  });

  test('bad options', () => {
    assert.throws(() => new SseDecoder({ maxEventBytes: -1 }), { name: 'TypeError', message: /^maxEventBytes/ });
  });

  test('data read from the chunk (feed-raw-spans) is decoded with replacement (C81), as feed does', () => {
    // Events of one data line (given by place, invalid bytes included), of several lines, with
    // types and IDs, non-ASCII types (the text decoded part by part), in chunks of every size.
    const parts = [];
    for (let i = 0; i < 60; i++) {
      // An event of one data line that is not UTF-8 on its own.
      if (i % 7 === 3) parts.push(Uint8Array.of(0x64, 0x61, 0x74, 0x61, 0x3a, 0x20, 0xff, 0x61, 0xc3, 0x0a, 0x0a));
      parts.push(new TextEncoder().encode(`${i % 4 === 1 ? `event: t\u00e9${i}\n` : ''}${i % 5 === 2 ? `id: ${i}\n` : ''}data: {"n":${i},"s":"${'x'.repeat(i)}\u00e9"}\n`));
      if (i % 6 === 4) parts.push(new TextEncoder().encode('data: second line\r\n'));
      parts.push(new TextEncoder().encode(i % 3 === 0 ? '\r\n' : '\n'));
    }
    const input = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (input.set(p, at), at + p.length), 0);
    const reference = new component.sse.Decoder(1 << 20);
    const want = [...reference.feed(input), ...reference.finish()].map((e) => ({
      type: e.eventType,
      data: e.data,
      id: e.id ?? null,
      retry: e.retry === undefined ? null : Number(e.retry),
    }));
    assert.equal(want.length, 69);
    assert.equal(want.filter((e) => e.data === '\uFFFDa\uFFFD').length, 9);
    for (const size of [1, 7, 64, 200, 1000, input.length]) {
      const decoder = new SseDecoder();
      const got = [];
      for (let i = 0; i < input.length; i += size) got.push(...decoder.feed(input.subarray(i, i + size)));
      got.push(...decoder.finish());
      assert.deepEqual(got, want, `chunks of ${size}`);
    }
  });
});

describe('ChatStream', () => {
  test('deltas and the assembled completion (C105)', () => {
    const decoder = new SseDecoder();
    const stream = new ChatStream();
    const deltas = [];
    const events = decoder.feed(
      'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"He"}}]}\n\n' +
        'data: {"choices":[{"index":0,"delta":{"content":"y"},"finish_reason":"stop"}]}\n\n' +
        'data: [DONE]\n\n',
    );
    for (const event of events) deltas.push(...stream.push(event.data));
    assert.deepEqual(deltas, [
      { index: 0, delta: { role: 'assistant', content: 'He' } },
      { index: 0, delta: { content: 'y' } },
    ]);
    const final = stream.finish();
    assert.equal(final.choices[0].message.content, 'Hey');
    assert.equal(final.done, true);
  });

  test('an error event with a flat message ends the stream (C96a)', () => {
    const stream = new ChatStream();
    stream.push('{"choices":[{"index":0,"delta":{"content":"Hi"}}]}');
    // As a `message` event the same data is an ordinary chunk.
    stream.push('{"message":"not an error"}');
    assert.throws(
      () => stream.push('{"message":"Overloaded"}', 'error'),
      (e) => e instanceof ChatStreamError && e.message === 'Overloaded',
    );
    assert.throws(() => stream.push('{}', 5), { name: 'TypeError' });
    assert.equal(stream.finish().error, 'Overloaded');
  });

  test('a provider error chunk (C96)', () => {
    const stream = new ChatStream();
    assert.throws(
      () => stream.push('{"error":{"message":"Rate limit"}}'),
      (e) => e instanceof ChatStreamError && e.message === 'Rate limit',
    );
    assert.throws(() => stream.push(5), { name: 'TypeError' });
    assert.equal(stream.finish().error, 'Rate limit');
  });
});

/** An upstream in a child process: execute blocks this thread while it waits (README). */
async function withUpstream(fn) {
  const child = spawn(process.execPath, [new URL('./fixtures/upstream.mjs', import.meta.url).pathname], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const [line] = await once(child.stdout, 'data');
    const port = Number(String(line).trim());
    return await fn(port);
  } finally {
    child.kill();
  }
}

describe('execute over jco\'s wasi:http shim', () => {
  test('run against a loopback upstream; the key is sent, never shown', async () => {
    await withUpstream((port) => {
      const connector = {
        id: 'local',
        name: 'Local',
        config: { apiProvider: 'Other', apiUrl: `http://127.0.0.1:${port}/v1/chat/completions`, defaultModel: 'llama3' },
        secrets: { apiKey: API_KEY },
      };
      const ok = execute(connector, { subAction: 'run', subActionParams: { body: '{"messages":[]}' } });
      assert.equal(ok.status, 'ok');
      // The upstream echoes what it received: body and the Authorization it saw.
      const echoed = JSON.parse(ok.data.choices[0].message.content);
      assert.equal(echoed.body, '{"messages":[],"stream":false}');
      assert.equal(echoed.authorization, `Bearer ${API_KEY}`);
      assert.deepEqual(ok.usage, { promptTokens: 1, completionTokens: 1, totalTokens: 2, source: 'reported' });
      assert.equal(ok.requestBodyBytes, 30);

      // The upstream answers 401 with a message that echoes the key: redacted (C32).
      const failed = execute(connector, { subAction: 'run', subActionParams: { body: '{"fail":true}' } });
      assert.equal(failed.status, 'error');
      assert.equal(
        failed.serviceMessage,
        'Status code: 401. Message: Unauthorized API Error - Incorrect API key provided: [REDACTED]',
      );
      assert.equal(failed.kind, 'http');
      assert.equal(failed.upstreamStatus, 401);
      assertNoSecret(JSON.stringify(failed));
    });
  });

  test('retries: a 503 is tried again when the settings say so (cli.md "Retries")', async () => {
    await withUpstream((port) => {
      const connector = {
        config: { apiProvider: 'Other', apiUrl: `http://127.0.0.1:${port}/v1/chat/completions`, defaultModel: 'llama3' },
        secrets: { apiKey: API_KEY },
      };
      const params = (body) => ({ subAction: 'run', subActionParams: { body } });
      const once = execute(connector, params('{"flaky":1}'));
      assert.equal(once.status, 'error');
      assert.equal(once.upstreamStatus, 503);
      assert.equal(once.attempts, 1);
      const retried = execute(connector, params('{"flaky":2}'), { retry: { maxAttempts: 2, initialDelay: 5 } });
      assert.equal(retried.status, 'ok');
      assert.equal(retried.attempts, 2);
      assert.throws(() => execute(connector, params('{}'), { retry: { maxAttempts: 0 } }), {
        name: 'TypeError',
        message: 'settings.retry.maxAttempts: expected a whole number from 1 to 10',
      });
    });
  });

  test('connection refused maps to ECONNREFUSED (C74)', () => {
    const connector = {
      config: { apiProvider: 'Other', apiUrl: 'http://127.0.0.1:1/v1', defaultModel: 'm' },
      secrets: { apiKey: API_KEY },
    };
    const failed = execute(connector, { subAction: 'run', subActionParams: { body: '{}' } });
    assert.equal(failed.status, 'error');
    assert.match(failed.serviceMessage, /^Status code: undefined\. Message: Unexpected API Error: ECONNREFUSED - /);
    assert.equal(failed.kind, 'transport');
    assert.equal(failed.code, 'ECONNREFUSED');
    assert.equal(failed.upstreamStatus, null);
    assertNoSecret(JSON.stringify(failed));
  });

  test('an invalid connector sends nothing (C16)', () => {
    assert.throws(() => execute(openai({}), { subAction: 'run', subActionParams: { body: '{}' } }), {
      name: 'ConnectorValidationError',
    });
  });
});

describe('ChatDecoder', () => {
  test('bytes in, deltas out; the completion survives an oversize event (C91, C105)', () => {
    const chat = new ChatDecoder({ maxEventBytes: 128 });
    const first = 'data: {"model":"m","choices":[{"delta":{"content":"He"}}]}\n\ndata: {"choices":[{"delt';
    assert.deepEqual(chat.feed(first), [{ index: 0, delta: { content: 'He' } }]);
    assert.deepEqual(chat.feed(new TextEncoder().encode('a":{"content":"y"}}]}\n\n')), [
      { index: 0, delta: { content: 'y' } },
    ]);
    const oversize = { name: 'SseError', message: 'SSE event exceeds the maximum size of 128 bytes' };
    assert.throws(() => chat.feed(`data: ${'x'.repeat(200)}\n\n`), oversize);
    assert.throws(() => chat.finish(), oversize);
    const completion = chat.completion();
    assert.equal(completion.model, 'm');
    assert.equal(completion.choices[0].message.content, 'Hey');
    assert.throws(() => new ChatDecoder({ maxEventBytes: 1.5 }), { name: 'TypeError', message: /^maxEventBytes/ });
  });
});
