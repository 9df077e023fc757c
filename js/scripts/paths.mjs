// Where cargo's outputs are, for the scripts of js/ and benches/node/: cargo's target directory
// is $CARGO_TARGET_DIR when it is set (a relative value is taken from the workspace root, where
// every documented cargo command runs), else the workspace's target/.
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The workspace root: the repository's top level. */
export const workspaceRoot = fileURLToPath(new URL('../../', import.meta.url));

/** Cargo's target directory. */
export function targetDir(env = process.env) {
  return resolve(workspaceRoot, env.CARGO_TARGET_DIR || 'target');
}

/** The release component: OPENAI_CONNECTOR_WASM when set, else where cargo builds it. */
export function componentPath(env = process.env) {
  return (
    env.OPENAI_CONNECTOR_WASM ||
    join(targetDir(env), 'wasm32-wasip2', 'release', 'openai_connector.wasm')
  );
}
