// Runs a Rust test binary compiled for wasm32-wasip1 under Node's WASI implementation, so the
// core crate's unit tests also run as 32-bit wasm (the width the filters run at in Envoy).
// Usage: node scripts/lib/run-wasi-tests.mjs TEST.wasm [libtest args...]
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import { argv, env, exit } from 'node:process';

const [file, ...args] = argv.slice(2);
if (!file) {
  console.error('usage: node run-wasi-tests.mjs TEST.wasm [libtest args...]');
  exit(2);
}
const wasi = new WASI({
  version: 'preview1',
  args: [file, ...args],
  env: { ...env, RUST_BACKTRACE: '0' },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(file));
const imports = typeof wasi.getImportObject === 'function'
  ? wasi.getImportObject()
  : { wasi_snapshot_preview1: wasi.wasiImport };
const instance = await WebAssembly.instantiate(module, imports);
try {
  exit(wasi.start(instance));
} catch (e) {
  // A failing test aborts the whole binary on wasm (panic=abort): report it as a failure.
  console.error(`wasm test binary trapped: ${e}`);
  exit(101);
}
