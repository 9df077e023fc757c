// Type-checked by `npm run typecheck` (never run): the README example and the wrapper's types
// agree with the jco-generated WIT declarations.
import {
  ChatStream,
  ConnectorValidationError,
  SseDecoder,
  buildRequest,
  component,
  mapResponse,
  parseConnector,
  type ParsedConnector,
  type Provider,
} from '../src/index.js';

const connector = {
  id: 'gateway',
  name: 'Corporate gateway',
  config: { apiProvider: 'Other', apiUrl: 'https://llm.corp.example/v1/chat/completions', defaultModel: 'llama3' },
  secrets: { apiKey: 'sk-...' },
};

try {
  const parsed: ParsedConnector = parseConnector(connector, { allowedHosts: ['llm.corp.example'] });
  const provider: Provider = parsed.provider;
  void provider;
} catch (e) {
  if (e instanceof ConnectorValidationError) {
    const lines: string[] = e.lines;
    void lines;
  }
}

const request = buildRequest(connector, { subAction: 'run', subActionParams: { body: '{"messages":[]}' } });
const body: Uint8Array = request.body;
const headers: Array<[string, string]> = request.headers;
void body;
void headers;

const mapped = mapResponse({ subAction: 'invokeAI', status: 200, body: '{"choices":[]}' });
if (mapped.status === 'ok') {
  const total: number = mapped.usage.totalTokens;
  void total;
} else {
  const message: string = mapped.serviceMessage;
  void message;
}

using decoder = new SseDecoder({ maxEventBytes: 65536 });
const chat = new ChatStream();
for (const event of decoder.feed('data: {"choices":[]}\n\n')) {
  for (const delta of chat.push(event.data)) {
    const index: number = delta.index;
    void index;
  }
}
const raw: string = component.responses.mapHttpError(429, new Uint8Array()).serviceMessage;
void raw;
