// What the Node benches share: where the corpora are, their chunking and the
// `eventsource-parser` baseline.
import { join } from 'node:path';
import { createParser } from 'eventsource-parser';
import { targetDir } from '../../js/scripts/paths.mjs';

/** Where `benches/sse.rs` writes the corpora: `$CARGO_TARGET_DIR/sse-corpora`, else the
 * workspace's `target/sse-corpora`. */
export const corpora = join(targetDir(), 'sse-corpora');

/** `bytes` cut into chunks of `size` bytes (the last one shorter), without copying. */
export function byteChunks(bytes, size) {
  const chunks = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
  return chunks;
}

/**
 * `eventsource-parser` fed `chunks` as bytes through a streaming TextDecoder, as a fetch-based
 * client does (the parser takes strings); returns the number of events.
 */
export function eventsourceParserBytes(chunks) {
  let events = 0;
  const decoder = new TextDecoder('utf-8');
  const parser = createParser({ onEvent: () => { events++; } });
  for (const chunk of chunks) parser.feed(decoder.decode(chunk, { stream: true }));
  parser.feed(decoder.decode());
  return events;
}
