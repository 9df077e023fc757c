// Transpiles the release component with jco into generated/ (not committed: built from the
// component every time, so the JavaScript package can never drift from the Rust build).
//
//   generated/            ES module that instantiates on import (what src/index.js uses)
//   generated/instantiate/ the same with an instantiate() export (used by scripts/budget.mjs)
//
// jco is pinned at 1.17.0 (package.json), the last release whose generated glue is plain
// synchronous lifting/lowering: instantiate() takes ~0.6 ms. From 1.17.1 on (checked up to
// 1.35.0) jco emits component-model-async task machinery in one large per-instance generator
// that V8 interprets on every instantiation: 35-80 ms, over the 50 ms budget (js/README.md).
//
// The component is the file named by OPENAI_CONNECTOR_WASM, else
// `$CARGO_TARGET_DIR/wasm32-wasip2/release/openai_connector.wasm` (a relative CARGO_TARGET_DIR is
// taken from the workspace root), else `../target/wasm32-wasip2/release/openai_connector.wasm`
// (scripts/paths.mjs).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { componentPath } from './paths.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const component = componentPath();

if (!existsSync(component)) {
  console.error(
    `component not found: ${component}\n` +
      'build it first: cargo build --release --target wasm32-wasip2 -p openai-connector',
  );
  process.exit(1);
}

const jco = join(root, 'node_modules', '.bin', 'jco');
const out = join(root, 'generated');
rmSync(out, { recursive: true, force: true });
const transpile = (dir, extra) =>
  execFileSync(jco, ['transpile', component, '--name', 'connector', '-o', dir, '-q', ...extra], {
    stdio: 'inherit',
  });
transpile(out, []);
transpile(join(out, 'instantiate'), ['--instantiation', 'async']);

// jco 1.17.0's glue calls `_debugLog` several times per component call, and `_debugLog` reads
// `process.env.JCO_DEBUG` each time: an environment lookup through Node's interceptor, 16% of
// the time of `SseDecoder.feed` on 200-byte chunks (node --cpu-prof). The variable is read once
// at load instead; setting JCO_DEBUG still turns the logging on. The exact text is required, so
// that a jco upgrade that changes it fails here instead of silently keeping the slow glue.
const DEBUG_LOG = /^( *)const _debugLog = \(\.\.\.args\) => \{\n\1  if \(!globalThis\?\.process\?\.env\?\.JCO_DEBUG\) \{ return; \}\n/m;
for (const file of [join(out, 'connector.js'), join(out, 'instantiate', 'connector.js')]) {
  const glue = readFileSync(file, 'utf8');
  if (!DEBUG_LOG.test(glue)) {
    console.error(`${file}: jco's _debugLog is not the expected text; update scripts/build.mjs`);
    process.exit(1);
  }
  writeFileSync(
    file,
    glue.replace(
      DEBUG_LOG,
      (_, indent) =>
        `${indent}const _jcoDebug = Boolean(globalThis?.process?.env?.JCO_DEBUG);\n` +
        `${indent}const _debugLog = (...args) => {\n${indent}  if (!_jcoDebug) { return; }\n`,
    ),
  );
}
console.log(`transpiled ${component} into ${out}`);
