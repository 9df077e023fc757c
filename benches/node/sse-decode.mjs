#!/usr/bin/env node
// The Node baseline of the whole-process `sse decode` bench (benches/sse-decode/run.py): what
// `openai-connector sse decode FILE` does, with the npm `eventsource-parser` package.
//
//   cd benches/node && npm ci && node sse-decode.mjs FILE [--json]
//
// Reads FILE in 64 KiB chunks (as the CLI did), decodes them with a streaming TextDecoder,
// feeds the parser, and writes one line per event to stdout,
// `{"event":TYPE,"data":DATA,"id":ID_OR_NULL,"retry":MS_OR_NULL}` (the CLI's shape): the lines
// of a chunk are joined and written with one synchronous write.
// `--json`: the baseline of `sse decode --chat`: the same parser plus `JSON.parse` of every
// event's data (except `[DONE]`), and no line per event (the least work a JavaScript chat
// assembler would do, so the ratio against it is conservative); the number of parsed events is
// written at the end.

import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { createParser } from 'eventsource-parser';

const CHUNK = 64 * 1024;
const args = process.argv.slice(2);
const json = args.includes('--json');
const files = args.filter((a) => a !== '--json');
if (files.length !== 1) {
  console.error('usage: node sse-decode.mjs FILE [--json]');
  process.exit(2);
}

let out = '';
let parsed = 0;
let retry = null;
const parser = createParser({
  onEvent: (event) => {
    if (json) {
      if (event.data.trim() !== '[DONE]') {
        JSON.parse(event.data);
        parsed++;
      }
      return;
    }
    out +=
      JSON.stringify({
        event: event.event ?? 'message',
        data: event.data,
        id: event.id ?? null,
        retry,
      }) + '\n';
    retry = null;
  },
  // The CLI gives the retry field of the event it came with.
  onRetry: (ms) => {
    retry = ms;
  },
});

const fd = openSync(files[0], 'r');
const buf = Buffer.allocUnsafe(CHUNK);
const decoder = new TextDecoder('utf-8');
for (;;) {
  const n = readSync(fd, buf, 0, CHUNK, null);
  parser.feed(decoder.decode(buf.subarray(0, n), { stream: n > 0 }));
  if (out.length > 0) {
    writeSync(1, out);
    out = '';
  }
  if (n === 0) break;
}
closeSync(fd);
if (json) writeSync(1, `${parsed} events\n`);
