// Types of the wrapper (src/index.js). The WIT types come from the jco-generated declarations
// in generated/interfaces/ (built by `npm run build`).
import type {
  Provider,
  TlsProfile,
  UsageSource,
} from '../generated/interfaces/connector-openai-types.js';
import type * as Validation from '../generated/interfaces/connector-openai-validation.js';
import type * as Requests from '../generated/interfaces/connector-openai-requests.js';
import type * as Responses from '../generated/interfaces/connector-openai-responses.js';
import type * as Sse from '../generated/interfaces/connector-openai-sse.js';
import type * as Actions from '../generated/interfaces/connector-openai-actions.js';

export type * as Wit from '../generated/interfaces/connector-openai-types.js';
export type { Provider, TlsProfile, UsageSource };

/** The raw WIT bindings (exact JSON texts, bigints, WIT results). */
export declare const component: {
  readonly validation: typeof Validation;
  readonly requests: typeof Requests;
  readonly responses: typeof Responses;
  readonly sse: typeof Sse;
  readonly actions: typeof Actions;
};

/** JSON text, or a value to serialise with JSON.stringify. */
export type JsonInput = string | Record<string, unknown>;

/** Kibana's create-connector body, secrets resolved. */
export interface ConnectorInput {
  id?: string;
  name?: string;
  /** The `config` object (or its JSON text). */
  config: JsonInput;
  /** The `secrets` object (or its JSON text): `apiKey`, `certificateData`, `privateKeyData`, `caData`. */
  secrets?: JsonInput;
}

/** Kibana's `xpack.actions.*` settings the component applies. */
export interface Settings {
  /** Host names a connector may call; `*` allows all. Default `['*']`. */
  allowedHosts?: string[];
  /** `responseTimeout` in ms. Default 60000. */
  responseTimeout?: number | bigint;
  /** `maxResponseContentLength` in bytes. Default 1048576. */
  maxResponseContentLength?: number | bigint;
  /** `retry` (cli.md "Retries"); what it leaves out keeps its default. Default: no retry. */
  retry?: RetrySettings;
}

/** Which failures are tried again (cli.md "Retries"). */
export interface RetrySettings {
  /** Attempts at most, the first included (1 to 10). Default 1: no retry. */
  maxAttempts?: number;
  /** The first backoff cap, in ms. Default 250. */
  initialDelay?: number | bigint;
  /** The longest delay waited, in ms (a longer `Retry-After` is not waited for). Default 20000. */
  maxDelay?: number | bigint;
}

export declare const DEFAULT_SETTINGS: Readonly<Required<Settings>>;
export declare const DEFAULT_MAX_EVENT_BYTES: number;

export type SubActionName =
  | 'run'
  | 'test'
  | 'stream'
  | 'invokeAI'
  | 'invokeStream'
  | 'invokeAsyncIterator'
  /** This project's sub-actions (not Kibana's): OpenAI's Responses and embeddings APIs. */
  | 'responses'
  | 'embeddings';

export interface ParsedConnector {
  id: string;
  name: string;
  provider: Provider;
  /** Kibana's get-connector shape (numbers through JSON.parse). */
  connector: Record<string, unknown>;
  /** The same, exact text (numbers as written). */
  connectorJson: string;
  /** TLS settings the host must apply, when the connector brings any (C122). */
  tls?: TlsProfile;
}

export interface BuiltRequest {
  subAction: SubActionName;
  streaming: boolean;
  method: string;
  url: string;
  headers: Array<[string, string]>;
  body: Uint8Array;
  totalTimeoutMs: number;
  idleTimeoutMs?: number;
}

/** What a tokenizer counts to estimate usage (C110–C112; WIT `estimation-input`). */
export interface EstimationInput {
  encoding: string;
  promptText: string;
  completionText: string;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  source: UsageSource;
}

/** What kind of failure ended an execution (WIT `failure-kind`); decide on it, not on the message. */
export type FailureKind =
  | 'params'
  | 'denied'
  | 'http'
  | 'transport'
  | 'timeout'
  | 'response-invalid'
  | 'stream'
  | 'canceled'
  | 'tls-refused'
  | 'sandbox'
  /** The connector's URL cannot be mapped to the Responses or embeddings API. */
  | 'not-mapped';

export interface FailureDetails {
  serviceMessage: string;
  retry: boolean;
  kind: FailureKind;
  /** The Node-style code of a `transport` failure (`ECONNREFUSED`, ...), else null. */
  code: string | null;
  /** The upstream's status when a response head arrived, else null. */
  upstreamStatus: number | null;
}

export type MappedResponse =
  | { status: 'ok'; data: unknown; dataJson: string; usage: Usage }
  | ({ status: 'error' } & FailureDetails);

export interface SseEvent {
  type: string;
  data: string;
  id: string | null;
  retry: number | null;
}

export interface ChatDelta {
  index: number;
  delta: Record<string, unknown>;
}

export declare class ConnectorValidationError extends Error {
  readonly config: string[];
  readonly secrets: string[];
  readonly lines: string[];
}

export declare class ConnectorFailure extends Error {
  readonly serviceMessage: string;
  readonly retry: boolean;
  readonly kind: FailureKind;
  readonly code: string | null;
  readonly upstreamStatus: number | null;
}

export declare class SseError extends Error {}
export declare class ChatStreamError extends Error {}

export declare function parseConnector(connector: ConnectorInput, settings?: Settings): ParsedConnector;

export declare function buildRequest(
  connector: ConnectorInput,
  params: JsonInput,
  settings?: Settings,
): BuiltRequest;

export declare function mapResponse(response: {
  subAction: SubActionName;
  status: number;
  body?: Uint8Array | string;
}): MappedResponse;

export interface ExecutionResult {
  status: 'ok' | 'error';
  data?: unknown;
  dataJson?: string;
  serviceMessage?: string;
  retry?: boolean;
  kind?: FailureKind;
  code?: string | null;
  upstreamStatus?: number | null;
  usage: Usage;
  /**
   * When no usage was reported but it can be estimated (a `responses` answer without `usage`):
   * the texts a tokenizer would count (this package has none).
   */
  estimate?: EstimationInput;
  requestBodyBytes?: number;
  /** Upstream attempts: 0 when nothing was sent, 1 without retries. */
  attempts: number;
}

/**
 * Runs a non-streaming sub-action over jco's wasi:http shim (synchronous: it blocks the event
 * loop until the upstream answers). See the README for what it needs.
 */
export declare function execute(
  connector: ConnectorInput,
  params: JsonInput,
  settings?: Settings,
): ExecutionResult;

export declare class SseDecoder implements Disposable {
  constructor(options?: { maxEventBytes?: number });
  feed(chunk: Uint8Array | string): SseEvent[];
  finish(): SseEvent[];
  [Symbol.dispose](): void;
}

export declare class ChatStream implements Disposable {
  /** One event's data and type (default `message`). */
  push(data: string, eventType?: string): ChatDelta[];
  finish(): Record<string, unknown>;
  [Symbol.dispose](): void;
}

export declare class ChatDecoder implements Disposable {
  constructor(options?: { maxEventBytes?: number });
  feed(chunk: Uint8Array | string): ChatDelta[];
  finish(): void;
  completion(): Record<string, unknown>;
  [Symbol.dispose](): void;
}

/** An output item of `response.output_item.added` / `.done` (empty strings where it has none). */
export interface ResponsesItem {
  outputIndex: number;
  itemType: string;
  id: string;
  callId: string;
  name: string;
  arguments: string;
}

/** One typed event of a Responses API stream; `type` is the WIT `responses-event` case. */
export type ResponsesEvent =
  | { type: 'created'; id: string; model: string }
  | { type: 'output-text-delta'; outputIndex: number; contentIndex: number; delta: string }
  | ({ type: 'output-item-added' } & ResponsesItem)
  | ({ type: 'output-item-done' } & ResponsesItem)
  | { type: 'function-call-arguments-delta'; outputIndex: number; delta: string }
  | { type: 'function-call-arguments-done'; outputIndex: number; arguments: string }
  | { type: 'completed'; usage: Usage | null }
  | { type: 'incomplete'; reason: string; usage: Usage | null }
  | { type: 'failed'; message: string }
  | { type: 'error'; message: string }
  | { type: 'other'; eventType: string };

/** How a Responses stream ended. */
export type ResponsesEnd =
  | { type: 'completed' }
  | { type: 'incomplete'; reason: string }
  | { type: 'failed'; message: string }
  | { type: 'error'; message: string };

export interface FunctionCall {
  callId: string;
  name: string;
  arguments: string;
}

export declare class ResponsesDecoder implements Disposable {
  constructor(options?: { maxEventBytes?: number });
  feed(chunk: Uint8Array | string): ResponsesEvent[];
  finish(): void;
  outputText(): string;
  functionCalls(): FunctionCall[];
  usage(): Usage | null;
  end(): ResponsesEnd | null;
  [Symbol.dispose](): void;
}
