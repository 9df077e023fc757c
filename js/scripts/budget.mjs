// Size and start-up budget of the component in Node (issue 6): prints the figures the README
// reports. Fails when the size or the instantiate budget is missed (instantiate is ~0.6 ms with
// jco 1.17.0, two orders of magnitude under its budget, so machine noise cannot fail it; a jco
// upgrade that brings back the 35-80 ms glue of jco >= 1.17.1 does, see README). The cold-start
// figures are reported, not enforced.
//
//   size         the release component (≤ 1 MiB)
//   instantiate  a new instance of the already compiled component, jco's instantiate() with
//                the preview2-shim imports: the Node counterpart of wasmtime's
//                Store + instantiate (≤ 50 ms, median of RUNS). Every run is a genuine new
//                instance: fresh core instances and memory, fresh glue; only the compiled
//                WebAssembly.Module objects are reused.
//   cold start   a fresh `node` process importing src/index.js (shim modules, 0.4 MB of
//                generated JS, compiling and instantiating the core wasm) and making one call:
//                reported, not enforced (median of COLD_RUNS processes)
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { componentPath } from './paths.mjs';

const RUNS = 21;
const COLD_RUNS = 7;
const SIZE_BUDGET = 1024 * 1024;
const INSTANTIATE_BUDGET_MS = 50;

const component = componentPath();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (ms) => `${ms.toFixed(2)} ms`;

// ---- size
const size = statSync(component).size;

// ---- instantiate (warm): compile the core modules once, then time instantiate()
const generated = new URL('../generated/instantiate/', import.meta.url);
const { instantiate } = await import(new URL('connector.js', generated));
const shims = {
  cli: await import('@bytecodealliance/preview2-shim/cli'),
  clocks: await import('@bytecodealliance/preview2-shim/clocks'),
  http: await import('@bytecodealliance/preview2-shim/http'),
  io: await import('@bytecodealliance/preview2-shim/io'),
  random: await import('@bytecodealliance/preview2-shim/random'),
};
const camel = (s) => s.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
// 'wasi:cli/terminal-input@0.2.6' -> shims.cli.terminalInput
const imports = new Proxy(
  {},
  {
    get(_, key) {
      const m = /^wasi:([a-z-]+)\/([a-z-]+)(@.*)?$/.exec(String(key));
      const iface = m && shims[m[1]]?.[camel(m[2])];
      if (!iface) throw new Error(`no preview2-shim implementation for import ${String(key)}`);
      return iface;
    },
  },
);
const compiled = new Map();
const compileStart = performance.now();
const getCoreModule = (path) => {
  if (!compiled.has(path)) {
    compiled.set(path, WebAssembly.compile(readFileSync(new URL(path, generated))));
  }
  return compiled.get(path);
};
let instance = await instantiate(getCoreModule, imports);
const firstInstantiateMs = performance.now() - compileStart;
const settings = {
  allowedHosts: ['*'],
  responseTimeoutMs: 60000n,
  maxResponseContentLength: 1048576n,
  retry: { maxAttempts: 1, initialDelayMs: 250n, maxDelayMs: 20000n },
};
const definition = {
  id: 'budget',
  name: 'budget',
  configJson: '{"apiProvider":"OpenAI","apiUrl":"https://api.openai.com/v1/chat/completions"}',
  secretsJson: '{"apiKey":"sk-budget-key"}',
};
instance.validation.validate(definition, settings); // the instance works
const times = [];
for (let i = 0; i < RUNS; i++) {
  const t = performance.now();
  instance = await instantiate(getCoreModule, imports);
  times.push(performance.now() - t);
}
instance.validation.validate(definition, settings);
const instantiateMs = median(times);

// ---- cold start: fresh processes
const probe = `
const t0 = performance.now();
const m = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
const t1 = performance.now();
m.parseConnector({ config: { apiProvider: 'OpenAI', apiUrl: 'https://api.openai.com/v1/chat/completions' }, secrets: { apiKey: 'sk-budget-key' } });
const t2 = performance.now();
process.stdout.write(JSON.stringify({ importMs: t1 - t0, firstCallMs: t2 - t1 }));
process.exit(0);
`;
const cold = [];
for (let i = 0; i < COLD_RUNS; i++) {
  cold.push(JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8' })));
}
const coldImportMs = median(cold.map((c) => c.importMs));
const coldFirstCallMs = median(cold.map((c) => c.firstCallMs));

const ok = (pass) => (pass ? 'ok' : 'OVER BUDGET');
console.log(`component          ${component}`);
console.log(`size               ${size} bytes (${(size / 1024).toFixed(1)} KiB; budget 1024 KiB: ${ok(size <= SIZE_BUDGET)})`);
console.log(`node               ${process.version}`);
console.log(
  `instantiate        ${fmt(instantiateMs)} median of ${RUNS}, compiled module reused (budget ${INSTANTIATE_BUDGET_MS} ms: ${ok(instantiateMs <= INSTANTIATE_BUDGET_MS)})`,
);
console.log(`first instantiate  ${fmt(firstInstantiateMs)} (compiling the core wasm included)`);
console.log(`cold import        ${fmt(coldImportMs)} median of ${COLD_RUNS} fresh processes (shim, generated JS, compile, instantiate)`);
console.log(`cold first call    ${fmt(coldFirstCallMs)} (parseConnector)`);
if (size > SIZE_BUDGET || instantiateMs > INSTANTIATE_BUDGET_MS) process.exit(1);
