#!/usr/bin/env node
// The connector component's SSE decoder running in Node (jco, V8's WebAssembly), against the npm
// `eventsource-parser` package in the same process, on the corpora that `benches/sse.rs` writes
// to target/sse-corpora/ (`$CARGO_TARGET_DIR/sse-corpora/` when that is set; run that bench
// first) and with the JavaScript package built (`cd js && npm ci && npm run build`, after a
// release build of the component).
//
//   cd benches/node && npm ci && node component-in-node.mjs
//
// Rows, all in decimal MB/s of corpus bytes, each after a 1 s warm-up over 4 s of whole-corpus
// runs (median and best run printed):
//   eventsource-parser        bytes in the corpus's chunks, a streaming TextDecoder, the parser
//                             (as eventsource-parser.mjs `bytes`): the baseline of the ratios
//   SseDecoder                js/src/index.js (`feed-raw-spans`, data decoded in JavaScript
//                             from the chunk), fed the corpus's chunks
//   SseDecoder, 16 KiB        the same, fed 16 KiB batches (as the component rows of sse.rs)
//   sse.decoder.feed, 16 KiB  the raw binding returning a record per event (jco lifts every
//                             string): the path SseDecoder took before WIT 0.3.2
// Every row counts its events, and the counts must agree. First, the cost of one call into the
// component (an empty chunk), which bounds what small chunks can reach.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { byteChunks, corpora, eventsourceParserBytes } from './common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const WARM_UP_MS = Number(process.env.WARM_UP_MS ?? 1000);
const MEASURE_MS = Number(process.env.MEASURE_MS ?? 4000);
const BATCH = 16 * 1024;

let js;
try {
  js = await import(join(here, '..', '..', 'js', 'src', 'index.js'));
} catch (e) {
  console.error(`cannot load js/src/index.js (build it: cd js && npm ci && npm run build): ${e.message}`);
  process.exit(1);
}
const { SseDecoder, component } = js;

function sseDecoder(chunks) {
  const decoder = new SseDecoder();
  let events = 0;
  for (const chunk of chunks) events += decoder.feed(chunk).length;
  events += decoder.finish().length;
  decoder[Symbol.dispose]();
  return events;
}

function records(chunks) {
  const decoder = new component.sse.Decoder(1 << 20);
  let events = 0;
  for (const chunk of chunks) events += decoder.feed(chunk).length;
  events += decoder.finish().length;
  decoder[Symbol.dispose]?.();
  return events;
}

function measure(run, input, bytes) {
  let events = 0;
  const warmUpEnd = performance.now() + WARM_UP_MS;
  while (performance.now() < warmUpEnd) events = run(input);
  const rates = [];
  const end = performance.now() + MEASURE_MS;
  while (performance.now() < end) {
    const start = performance.now();
    const n = run(input);
    const ms = performance.now() - start;
    if (n !== events) throw new Error(`event count changed: ${n} against ${events}`);
    rates.push(bytes / ms / 1000);
  }
  rates.sort((a, b) => a - b);
  return { median: rates[Math.floor(rates.length / 2)], best: rates[rates.length - 1], runs: rates.length, events };
}

console.log(`node ${process.version}, eventsource-parser 3.1.1, component through jco`);
{
  // What one call into the component costs, whatever it decodes: `feed` of an empty chunk.
  const decoder = new SseDecoder();
  const empty = new Uint8Array(0);
  const calls = 20000;
  const perCall = [];
  for (let round = 0; round < 7; round++) {
    const start = performance.now();
    for (let i = 0; i < calls; i++) decoder.feed(empty);
    perCall.push(((performance.now() - start) * 1000) / calls);
  }
  perCall.sort((a, b) => a - b);
  console.log(`one SseDecoder.feed call of an empty chunk: ${perCall[3].toFixed(2)} µs (median of 7 × ${calls})`);
}
for (const [file, chunk] of [['chat.sse', 200], ['large.sse', 1460]]) {
  const bytes = new Uint8Array(readFileSync(join(corpora, file)));
  const rows = [
    ['eventsource-parser', eventsourceParserBytes, byteChunks(bytes, chunk)],
    ['SseDecoder', sseDecoder, byteChunks(bytes, chunk)],
    ['SseDecoder, 16 KiB', sseDecoder, byteChunks(bytes, BATCH)],
    ['sse.decoder.feed, 16 KiB', records, byteChunks(bytes, BATCH)],
  ];
  let baseline;
  let events;
  console.log(`${file} (${bytes.length} bytes, ${chunk}-byte chunks)`);
  for (const [name, run, input] of rows) {
    const r = measure(run, input, bytes.length);
    if (events !== undefined && r.events !== events) {
      throw new Error(`${name}: ${r.events} events, ${events} from eventsource-parser`);
    }
    events = r.events;
    baseline ??= r.median;
    console.log(
      `  ${name.padEnd(26)} ${r.median.toFixed(1).padStart(7)} MB/s median, ${r.best.toFixed(1).padStart(7)} best` +
        ` (${r.runs} runs, ${r.events} events), ${(r.median / baseline).toFixed(2)}x the parser's median`,
    );
  }
}
