// Builds the optional native SGEMM addon (runtime/native.ts loads it) with node-gyp, against the
// Node.js headers installed beside this node: nothing is downloaded. Run by `npm install` /
// `npm ci`; it never fails the install. On failure it prints one line and leaves the reason
// as the first line of build/build.log, where the loader reports it from.
//   node runtime/native/build.mjs
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const buildDir = join(here, 'build');
const logPath = join(buildDir, 'build.log');

function writeLog(text) {
  mkdirSync(buildDir, { recursive: true });
  const tmp = `${logPath}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, logPath);
}

function skip(reason, detail = '') {
  writeLog(`${reason}\n${detail}`);
  console.log(`mdt-ts: native kernels not built (${reason}); the wasm backend runs without them`);
  process.exit(0);
}

/** node-gyp: the copy npm runs scripts with, a local install, or the one bundled with npm. */
function findNodeGyp() {
  const candidates = [process.env.npm_config_node_gyp];
  try {
    candidates.push(createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not installed locally
  }
  const prefix = resolve(dirname(process.execPath), '..');
  candidates.push(join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(join(dirname(process.execPath), 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  return candidates.find((c) => c !== undefined && c !== '' && existsSync(c));
}

/** A directory whose include/node holds this node's N-API headers. */
function findNodeDir() {
  const candidates = [process.env.npm_config_nodedir, resolve(dirname(process.execPath), '..')];
  return candidates.find((d) => d !== undefined && d !== '' && existsSync(join(d, 'include', 'node', 'node_api.h')));
}

function lastLines(text, n) {
  return text.split('\n').map((l) => l.trim()).filter((l) => l !== '').slice(-n);
}

if (process.env.MDT_NATIVE === '0') skip('MDT_NATIVE=0');
if (process.arch !== 'x64') skip(`the kernels need an x86-64 CPU with AVX2, this is ${process.arch}`);
const gyp = findNodeGyp();
if (gyp === undefined) skip('node-gyp was not found (npm bundles it; or `npm install node-gyp`)');
const nodedir = findNodeDir();
if (nodedir === undefined) skip(`no Node.js headers (include/node/node_api.h) under ${resolve(dirname(process.execPath), '..')} or npm_config_nodedir`);

const r = spawnSync(process.execPath, [gyp, 'rebuild', '--release', `--nodedir=${nodedir}`], {
  cwd: here,
  encoding: 'utf8',
  env: { ...process.env, npm_config_nodedir: nodedir },
  stdio: ['ignore', 'pipe', 'pipe'],
});
const output = `${r.stdout ?? ''}\n${r.stderr ?? ''}`;
if (r.error !== undefined || r.status !== 0) {
  const lines = output.split('\n');
  const gypError = lines.map((l) => /^gyp ERR! stack Error: (.*)/.exec(l)?.[1]).find((m) => m !== undefined);
  const buildError = lines.find((l) => /error|not found|No such file/i.test(l) && !l.startsWith('gyp '));
  const cause = (buildError ?? gypError ?? lastLines(output, 1)[0] ?? r.error?.message ?? `exit ${r.status}`).trim();
  skip(`node-gyp failed: ${cause}`, output);
}
writeLog(`built with node-gyp against ${nodedir}\n${output}`);
console.log('mdt-ts: native kernels built (runtime/native/build/Release/mdt_native.node)');
