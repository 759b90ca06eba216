import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
const wasi = new WASI({ version: 'preview1', args: ['x'] });
// The module built by run.sh; its `env` imports (the proxy-wasm ABI) are never called.
const mod = await WebAssembly.compile(await readFile(process.argv[2]));
const imports = wasi.getImportObject();
imports.env = {};
for (const i of WebAssembly.Module.imports(mod)) if (i.module === 'env') imports.env[i.name] = () => 0;
const inst = await WebAssembly.instantiate(mod, imports);
wasi.start({ exports: { memory: inst.exports.memory, _start: inst.exports._start } });
