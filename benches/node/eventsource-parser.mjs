#!/usr/bin/env node
// Throughput of the npm `eventsource-parser` package over the corpora that `benches/sse.rs`
// writes to target/sse-corpora/ (`$CARGO_TARGET_DIR/sse-corpora/` when that is set; run that
// bench first), delivered in the same chunks.
//
//   cd benches/node && npm ci && node eventsource-parser.mjs [FILE:CHUNK_BYTES ...]
//
// Without arguments: <target>/sse-corpora/chat.sse in 200-byte chunks and
// <target>/sse-corpora/large.sse in 1460-byte chunks (as in benches/sse.rs), then both in
// 16 KiB batches, the batching of the component rows.
//
// Modes, all in decimal MB/s of corpus bytes:
//   bytes    the chunks as bytes, decoded with a streaming TextDecoder and fed to the parser:
//            what a fetch-based client does (the parser takes strings)
//   strings  the chunks already decoded to strings: the parser alone
//   json     `bytes`, plus JSON.parse of every event's data except [DONE]: a floor for chat
//            assembly in JavaScript
//
// Each mode warms up for 1 s, then runs the whole corpus repeatedly for 5 s; the median and the
// best run are printed.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createParser } from 'eventsource-parser';
import { byteChunks, corpora, eventsourceParserBytes } from './common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const WARM_UP_MS = 1000;
const MEASURE_MS = 5000;

const args = process.argv.slice(2);
const inputs = (args.length > 0
  ? args
  : [
      `${join(corpora, 'chat.sse')}:200`,
      `${join(corpora, 'large.sse')}:1460`,
      `${join(corpora, 'chat.sse')}:16384`,
      `${join(corpora, 'large.sse')}:16384`,
    ]
).map((arg) => {
  const colon = arg.lastIndexOf(':');
  if (colon < 0) throw new Error(`expected FILE:CHUNK_BYTES, got ${arg}`);
  return { path: arg.slice(0, colon), chunk: Number(arg.slice(colon + 1)) };
});

function runStrings(strings) {
  let events = 0;
  const parser = createParser({ onEvent: () => { events++; } });
  for (const s of strings) parser.feed(s);
  return events;
}

function runJson(chunks) {
  let events = 0;
  let sink = 0;
  const decoder = new TextDecoder('utf-8');
  const parser = createParser({
    onEvent: (event) => {
      events++;
      if (event.data.trim() !== '[DONE]') {
        const chunk = JSON.parse(event.data);
        sink += chunk.choices.length;
      }
    },
  });
  for (const chunk of chunks) parser.feed(decoder.decode(chunk, { stream: true }));
  parser.feed(decoder.decode());
  if (sink < 0) throw new Error('unreachable');
  return events;
}

function measure(run) {
  const warmUpEnd = performance.now() + WARM_UP_MS;
  let events = 0;
  while (performance.now() < warmUpEnd) events = run();
  const times = [];
  const end = performance.now() + MEASURE_MS;
  while (performance.now() < end || times.length < 5) {
    const start = performance.now();
    events = run();
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return { events, median: times[Math.floor(times.length / 2)], best: times[0], runs: times.length };
}

console.log(`node ${process.version}, eventsource-parser ${JSON.parse(readFileSync(join(here, 'node_modules', 'eventsource-parser', 'package.json'), 'utf8')).version}`);
for (const { path, chunk } of inputs) {
  const bytes = readFileSync(path);
  const chunks = byteChunks(bytes, chunk);
  const decoder = new TextDecoder('utf-8');
  const strings = chunks.map((c) => decoder.decode(c, { stream: true }));
  strings.push(decoder.decode());
  const mb = bytes.length / 1e6;
  for (const [mode, run] of [
    ['bytes', () => eventsourceParserBytes(chunks)],
    ['strings', () => runStrings(strings)],
    ['json', () => runJson(chunks)],
  ]) {
    const r = measure(run);
    console.log(
      `${path} (${bytes.length} bytes, ${chunk}-byte chunks) ${mode.padEnd(7)} ` +
        `${(mb / (r.median / 1000)).toFixed(1)} MB/s median, ` +
        `${(mb / (r.best / 1000)).toFixed(1)} MB/s best (${r.runs} runs, ${r.events} events)`,
    );
  }
}
