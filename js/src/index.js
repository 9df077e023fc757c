// A thin, idiomatic wrapper over the jco-transpiled connector component (generated/).
//
// Every function calls the component; nothing here re-implements connector behaviour. The
// wrapper only converts between JavaScript values and the WIT types (JSON texts, bigints,
// results) and turns WIT errors into Error subclasses. Types: index.d.ts.
import {
  actions,
  requests,
  responses,
  sse,
  validation,
} from '../generated/connector.js';

/** The raw WIT bindings, for callers who want the exact texts and types of the WIT. */
export const component = Object.freeze({ validation, requests, responses, sse, actions });

/** Kibana's defaults for the deployment settings the component applies (contract section 0). */
export const DEFAULT_SETTINGS = Object.freeze({
  allowedHosts: Object.freeze(['*']),
  responseTimeout: 60_000,
  maxResponseContentLength: 1_048_576,
  retry: Object.freeze({ maxAttempts: 1, initialDelay: 250, maxDelay: 20_000 }),
});

/** Largest SSE event the decoder holds by default (C91). */
export const DEFAULT_MAX_EVENT_BYTES = 1_048_576;

const CONFIG_PREFIX = 'error validating action type config: ';
const SECRETS_PREFIX = 'error validating action type secrets: ';

/** A connector whose config or secrets are invalid (C1–C32); nothing was or will be sent. */
export class ConnectorValidationError extends Error {
  constructor(errors) {
    const lines = [
      ...errors.config.map((line) => CONFIG_PREFIX + line),
      ...errors.secrets.map((line) => SECRETS_PREFIX + line),
    ];
    super(lines.join('\n'));
    this.name = 'ConnectorValidationError';
    /** Problems with `config`, in Kibana's wording without the prefix. */
    this.config = errors.config;
    /** Problems with `secrets`, in Kibana's wording without the prefix. */
    this.secrets = errors.secrets;
    /** Kibana's lines, prefixes included. */
    this.lines = lines;
  }
}

/** An execution the connector refuses or that failed, as Kibana's `_execute` reports it. */
export class ConnectorFailure extends Error {
  constructor(failure) {
    super(failure.serviceMessage);
    this.name = 'ConnectorFailure';
    /** Kibana's `serviceMessage`. */
    this.serviceMessage = failure.serviceMessage;
    /** Kibana's `retry`. */
    this.retry = failure.retry;
    Object.assign(this, failureDetails(failure));
  }
}

/**
 * What kind of failure it was (WIT `failure-kind`, never parsed from the message): `kind` is
 * one of `params`, `denied`, `http`, `transport`, `timeout`, `response-invalid`, `stream`,
 * `canceled`, `tls-refused`, `sandbox`, `not-mapped` (the connector's URL cannot be mapped to
 * the Responses or embeddings API); `code` is the Node-style code of a `transport` failure;
 * `upstreamStatus` the upstream's status when a response head arrived.
 */
function failureDetails(failure) {
  return {
    kind: failure.kind.tag,
    code: failure.kind.tag === 'transport' ? failure.kind.val : null,
    upstreamStatus: failure.upstreamStatus ?? null,
  };
}

/** An execution's failure as the functions below return it. */
const failureResult = (failure) => ({
  status: 'error',
  serviceMessage: failure.serviceMessage,
  retry: failure.retry,
  ...failureDetails(failure),
});

/** The SSE decoder stopped (C91); every further call fails the same way. */
export class SseError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SseError';
  }
}

/** The chat stream failed (C95, C96): invalid JSON data or a provider error chunk. */
export class ChatStreamError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ChatStreamError';
  }
}

/** Decodes the UTF-8 bytes the component returns (it promises valid UTF-8; `fatal` checks). */
const utf8 = new TextDecoder('utf-8', { fatal: true });
/** Decodes stream bytes as the WHATWG decoder does: each invalid sequence becomes U+FFFD (C81). */
const utf8Replacing = new TextDecoder('utf-8');

const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

/** JSON text of `value` (a string is taken as JSON text already). */
function jsonText(value, field) {
  if (typeof value === 'string') return value;
  if (value === undefined) throw new TypeError(`${field}: missing (give an object or JSON text)`);
  return JSON.stringify(value);
}

function toDefinition(connector) {
  if (!isObject(connector)) {
    throw new TypeError('connector: expected an object {id, name, config, secrets}');
  }
  for (const field of ['id', 'name']) {
    if (connector[field] !== undefined && typeof connector[field] !== 'string') {
      throw new TypeError(`connector.${field}: expected a string`);
    }
  }
  return {
    id: connector.id ?? '',
    name: connector.name ?? '',
    configJson: jsonText(connector.config, 'connector.config'),
    // Never echoed: the component reports problems by field name only (C32).
    secretsJson: jsonText(connector.secrets ?? {}, 'connector.secrets'),
  };
}

function toU64(value, field) {
  if (typeof value === 'bigint' && value >= 0n) return value;
  if (Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  throw new TypeError(`settings.${field}: expected a non-negative integer`);
}

function toSettings(settings = {}) {
  if (!isObject(settings)) throw new TypeError('settings: expected an object');
  const s = { ...DEFAULT_SETTINGS, ...settings };
  if (!Array.isArray(s.allowedHosts) || !s.allowedHosts.every((h) => typeof h === 'string')) {
    throw new TypeError('settings.allowedHosts: expected an array of strings');
  }
  return {
    allowedHosts: [...s.allowedHosts],
    responseTimeoutMs: toU64(s.responseTimeout, 'responseTimeout'),
    maxResponseContentLength: toU64(s.maxResponseContentLength, 'maxResponseContentLength'),
    retry: toRetry(s.retry),
  };
}

/** The `retry` setting (cli.md "Retries"), with the defaults for what it leaves out. */
function toRetry(retry) {
  if (!isObject(retry)) throw new TypeError('settings.retry: expected an object');
  const r = { ...DEFAULT_SETTINGS.retry, ...retry };
  if (!Number.isInteger(r.maxAttempts) || r.maxAttempts < 1 || r.maxAttempts > 10) {
    throw new TypeError('settings.retry.maxAttempts: expected a whole number from 1 to 10');
  }
  const initialDelayMs = toU64(r.initialDelay, 'retry.initialDelay');
  const maxDelayMs = toU64(r.maxDelay, 'retry.maxDelay');
  if (initialDelayMs > maxDelayMs) {
    throw new TypeError('settings.retry.initialDelay: must not exceed maxDelay');
  }
  return { maxAttempts: r.maxAttempts, initialDelayMs, maxDelayMs };
}

function toBytes(body, field) {
  if (body instanceof Uint8Array) return body;
  if (typeof body === 'string') return new TextEncoder().encode(body);
  throw new TypeError(`${field}: expected a Uint8Array or a string`);
}

/** The payload of a WIT `result` error, which jco throws as a ComponentError. */
function payloadOf(error) {
  if (error && typeof error === 'object' && 'payload' in error) return error.payload;
  throw error;
}

const SUB_ACTIONS = {
  run: 'run',
  test: 'test',
  stream: 'stream',
  invokeAI: 'invoke-ai',
  invokeStream: 'invoke-stream',
  invokeAsyncIterator: 'invoke-async-iterator',
  // This project's sub-actions, not Kibana's: OpenAI's Responses and embeddings APIs.
  responses: 'responses',
  embeddings: 'embeddings',
};
const KIBANA_SUB_ACTIONS = Object.fromEntries(Object.entries(SUB_ACTIONS).map(([k, v]) => [v, k]));

function toSubAction(name) {
  if (SUB_ACTIONS[name]) return SUB_ACTIONS[name];
  if (KIBANA_SUB_ACTIONS[name]) return name;
  throw new TypeError(`subAction: unknown sub-action ${JSON.stringify(String(name))}`);
}

const toUsage = (u) => ({
  promptTokens: Number(u.promptTokens),
  completionTokens: Number(u.completionTokens),
  totalTokens: Number(u.totalTokens),
  source: u.source,
});

/**
 * Validates a connector (Kibana's create-connector body: `{id, name, config, secrets}`, with
 * `config` and `secrets` as objects or JSON text) against the deployment settings.
 * Throws ConnectorValidationError listing every problem.
 */
export function parseConnector(connector, settings) {
  let validated;
  try {
    validated = validation.validate(toDefinition(connector), toSettings(settings));
  } catch (e) {
    throw new ConnectorValidationError(payloadOf(e));
  }
  return {
    id: validated.prepared.id,
    name: validated.prepared.name,
    provider: validated.prepared.provider,
    connector: JSON.parse(validated.connectorJson),
    connectorJson: validated.connectorJson,
    tls: validated.tls,
  };
}

/**
 * The HTTP request an execution would send, exactly (sections 3 and 4), without sending it.
 * `params` is Kibana's `_execute` params `{subAction, subActionParams}`, as an object or JSON
 * text. Throws ConnectorValidationError (invalid connector) or ConnectorFailure (params or the
 * allow-list refused the execution).
 */
export function buildRequest(connector, params, settings) {
  let plan;
  try {
    plan = requests.build(toDefinition(connector), toSettings(settings), jsonText(params, 'params'));
  } catch (e) {
    const error = payloadOf(e);
    if (error.tag === 'invalid-connector') throw new ConnectorValidationError(error.val);
    throw new ConnectorFailure(error.val);
  }
  return {
    subAction: KIBANA_SUB_ACTIONS[plan.subAction],
    streaming: plan.streaming,
    method: plan.request.method,
    url: plan.request.url,
    headers: plan.request.headers,
    body: plan.request.body,
    totalTimeoutMs: Number(plan.totalTimeoutMs),
    idleTimeoutMs: plan.idleTimeoutMs === undefined ? undefined : Number(plan.idleTimeoutMs),
  };
}

/**
 * Maps an upstream response to Kibana's `_execute` result (section 5): `{status: 'ok', data,
 * dataJson, usage}` for a valid 2xx body, `{status: 'error', serviceMessage, retry}` otherwise.
 */
export function mapResponse({ subAction, status, body }) {
  if (!Number.isInteger(status) || status < 100 || status > 999) {
    throw new TypeError('status: expected an HTTP status code (100-999)');
  }
  const bytes = toBytes(body ?? '', 'body');
  if (status < 200 || status > 299) {
    return failureResult(responses.mapHttpError(status, bytes));
  }
  try {
    const [dataJson, usage] = responses.mapSuccess(toSubAction(subAction), bytes);
    return { status: 'ok', data: JSON.parse(dataJson), dataJson, usage: toUsage(usage) };
  } catch (e) {
    return failureResult(payloadOf(e));
  }
}

/**
 * Runs a non-streaming sub-action: validation, request, response mapping, through the
 * component's `actions.execute` and jco's wasi:http shim. Synchronous: the event loop is blocked
 * until the upstream answers, so the upstream must not live on this thread. Throws
 * ConnectorValidationError when the connector is invalid (nothing is sent, C16).
 */
export function execute(connector, params, settings) {
  const witSettings = toSettings(settings);
  let validated;
  try {
    validated = validation.validate(toDefinition(connector), witSettings);
  } catch (e) {
    throw new ConnectorValidationError(payloadOf(e));
  }
  const execution = actions.execute(validated.prepared, witSettings, jsonText(params, 'params'));
  const { outcome } = execution;
  const result =
    outcome.tag === 'ok'
      ? { status: 'ok', data: JSON.parse(outcome.val), dataJson: outcome.val }
      : failureResult(outcome.val);
  result.usage = toUsage(execution.usage);
  if (execution.estimate !== undefined) result.estimate = execution.estimate;
  if (execution.requestBodyBytes !== undefined) {
    result.requestBodyBytes = Number(execution.requestBodyBytes);
  }
  result.attempts = execution.attempts;
  return result;
}

/** An event's reconnection time as the JavaScript API gives it: a number, or null. */
const retryOf = (retry) => (retry === undefined ? null : Number(retry));

const toEvent = (e) => ({
  type: e.eventType,
  data: e.data,
  id: e.id ?? null,
  retry: retryOf(e.retry),
});

/** In `event-spans`: "no ID", and a data start meaning "in `text`". */
const ABSENT = 0xffffffff;

/**
 * The events of a `feed-raw-spans` result on `chunk`: each event's type and ID, and its data when
 * not in the chunk, are the next parts of `text`; data given by its place in the chunk is the
 * chunk's bytes, decoded here (C81). A result that does not describe `text` or `chunk` throws.
 */
function fromRawSpans({ text, spans, retries }, chunk) {
  if (spans.length !== retries.length * 4) throw malformedSpans();
  let at = 0;
  const part = (len) => {
    if (at + len > text.length) throw malformedSpans();
    return text.subarray(at, (at += len));
  };
  // Most events have the same type (`message`): its bytes are compared with the last type's
  // instead of decoded again.
  let lastType = '';
  let lastTypeBytes = new Uint8Array(0);
  const takeType = (len) => {
    const bytes = part(len);
    if (!sameBytes(bytes, lastTypeBytes)) {
      lastType = utf8.decode(bytes);
      lastTypeBytes = bytes;
    }
    return lastType;
  };
  const events = new Array(retries.length);
  for (let i = 0, n = 0; i < retries.length; i++, n += 4) {
    const type = takeType(spans[n]);
    const start = spans[n + 1];
    const length = spans[n + 2];
    let data;
    if (start === ABSENT) {
      data = utf8.decode(part(length));
    } else if (start + length <= chunk.length) {
      data = utf8Replacing.decode(chunk.subarray(start, start + length));
    } else {
      throw malformedSpans();
    }
    const id = spans[n + 3] === ABSENT ? null : utf8.decode(part(spans[n + 3]));
    events[i] = { type, data, id, retry: retryOf(retries[i]) };
  }
  if (at !== text.length) throw malformedSpans();
  return events;
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const malformedSpans = () => new Error('the component returned malformed event spans');

/** The decoders' `maxEventBytes` option (C91), checked. */
function maxEventBytesOf({ maxEventBytes = DEFAULT_MAX_EVENT_BYTES } = {}) {
  if (!Number.isInteger(maxEventBytes) || maxEventBytes < 0 || maxEventBytes > 0xffffffff) {
    throw new TypeError('maxEventBytes: expected an integer from 0 to 4294967295');
  }
  return maxEventBytes;
}

/** A WHATWG event-stream decoder (C79–C91): feed bytes in chunks of any size. */
export class SseDecoder {
  #decoder;

  constructor(options) {
    this.#decoder = new sse.Decoder(maxEventBytesOf(options));
  }

  /**
   * Decodes `chunk` (bytes or text) and returns the events it completed. Through
   * `feed-raw-spans`: the data of most events is decoded here from `chunk`, not copied out of
   * the component.
   */
  feed(chunk) {
    const bytes = toBytes(chunk, 'chunk');
    let spans;
    try {
      spans = this.#decoder.feedRawSpans(bytes);
    } catch (e) {
      throw new SseError(payloadOf(e));
    }
    return fromRawSpans(spans, bytes);
  }

  /** Ends the input; a partly built event is discarded (C89). */
  finish() {
    try {
      return this.#decoder.finish().map(toEvent);
    } catch (e) {
      throw new SseError(payloadOf(e));
    }
  }

  [Symbol.dispose]() {
    this.#decoder[Symbol.dispose]?.();
  }
}

/** Accumulates chat-completion chunks into one completion (C92–C105). */
export class ChatStream {
  #stream = new sse.ChatStream();

  /**
   * Takes one event's data and type (default `message`); returns its deltas `{index, delta}`.
   * An `error` event whose data has a string `message` and no `error` ends the stream (C96a).
   */
  push(data, eventType = 'message') {
    if (typeof data !== 'string') throw new TypeError('data: expected a string');
    if (typeof eventType !== 'string') throw new TypeError('eventType: expected a string');
    try {
      return this.#stream.pushEvent(eventType, data).map((line) => JSON.parse(line));
    } catch (e) {
      throw new ChatStreamError(payloadOf(e));
    }
  }

  /** The assembled completion (C105). */
  finish() {
    return JSON.parse(this.#stream.finish());
  }

  [Symbol.dispose]() {
    this.#stream[Symbol.dispose]?.();
  }
}

/**
 * An event-stream decoder feeding a chat stream inside the component: bytes in, deltas out, one
 * call per chunk instead of one per event (C79–C105). The same results as `SseDecoder` plus
 * `ChatStream.push` of every event's data, except that an `error` event is seen as one (C96a).
 */
export class ChatDecoder {
  #decoder;

  constructor(options) {
    this.#decoder = new sse.ChatDecoder(maxEventBytesOf(options));
  }

  /**
   * Decodes `chunk` (bytes or text) and returns the deltas `{index, delta}` of the events it
   * completed. A stream error (C95, C96) shows in `completion().error`; a decoding error (C91)
   * throws `SseError` once the deltas before it were returned, and shows there too (C131).
   */
  feed(chunk) {
    let lines;
    try {
      lines = this.#decoder.feed(toBytes(chunk, 'chunk'));
    } catch (e) {
      throw new SseError(payloadOf(e));
    }
    // WIT 0.3.0: UTF-8 bytes, whole lines each ending in LF.
    if (lines.length === 0) return [];
    const text = utf8.decode(lines);
    return text.slice(0, -1).split('\n').map((line) => JSON.parse(line));
  }

  /** Ends the input (C89); throws `SseError` if decoding had stopped (C91). */
  finish() {
    try {
      this.#decoder.finish();
    } catch (e) {
      throw new SseError(payloadOf(e));
    }
  }

  /** The completion assembled so far (C105), also after an error. */
  completion() {
    return JSON.parse(utf8.decode(this.#decoder.completion()));
  }

  [Symbol.dispose]() {
    this.#decoder[Symbol.dispose]?.();
  }
}

/** A Responses stream event as the wrapper gives it: `{type, ...fields}`, `type` the WIT case. */
function toResponsesEvent({ tag, val }) {
  switch (tag) {
    case 'completed':
      return { type: tag, usage: val === undefined ? null : toUsage(val) };
    case 'incomplete':
      return { type: tag, reason: val.reason, usage: val.usage === undefined ? null : toUsage(val.usage) };
    case 'failed':
    case 'error':
      return { type: tag, message: val };
    case 'other':
      return { type: tag, eventType: val };
    case 'function-call-arguments-delta':
      return { type: tag, outputIndex: val.outputIndex, delta: val.text };
    case 'function-call-arguments-done':
      return { type: tag, outputIndex: val.outputIndex, arguments: val.text };
    default:
      // created, output-text-delta, output-item-added, output-item-done: the record's fields.
      return { type: tag, ...val };
  }
}

/**
 * An event-stream decoder feeding a Responses-stream assembly inside the component (OpenAI's
 * Responses API streamed): bytes in, typed events out. `outputText()`, `functionCalls()`,
 * `usage()` and `end()` give what was assembled.
 */
export class ResponsesDecoder {
  #decoder;

  constructor(options) {
    this.#decoder = new sse.ResponsesDecoder(maxEventBytesOf(options));
  }

  /**
   * Decodes `chunk` (bytes or text) and returns the typed events it completed. A decoding error
   * (C91) throws `SseError` once the events before it were returned.
   */
  feed(chunk) {
    try {
      return this.#decoder.feed(toBytes(chunk, 'chunk')).map(toResponsesEvent);
    } catch (e) {
      throw new SseError(payloadOf(e));
    }
  }

  /** Ends the input (C89); throws `SseError` if decoding had stopped (C91). */
  finish() {
    try {
      this.#decoder.finish();
    } catch (e) {
      throw new SseError(payloadOf(e));
    }
  }

  /** The output text assembled so far. */
  outputText() {
    return this.#decoder.outputText();
  }

  /** The function calls assembled so far: `{callId, name, arguments}`. */
  functionCalls() {
    return this.#decoder.functionCalls();
  }

  /** The usage of the ending event, or null. */
  usage() {
    const usage = this.#decoder.usage();
    return usage === undefined ? null : toUsage(usage);
  }

  /** How the stream ended (`{type: 'completed' | 'incomplete' | 'failed' | 'error', ...}`), or null. */
  end() {
    const end = this.#decoder.end();
    if (end === undefined) return null;
    switch (end.tag) {
      case 'completed':
        return { type: end.tag };
      case 'incomplete':
        return { type: end.tag, reason: end.val };
      default:
        return { type: end.tag, message: end.val };
    }
  }

  [Symbol.dispose]() {
    this.#decoder[Symbol.dispose]?.();
  }
}
