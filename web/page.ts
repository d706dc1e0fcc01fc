/**
 * The page: gets a checkpoint (dropped, chosen, or served beside it), hands it to the model
 * worker, and draws what comes back — class-conditional grids, inpainted grids — with the CLI's
 * own grid layout (mdt/viz/raster.ts). State for tests: body[data-state] and window.mdt.
 */
import { imageGrid } from '../mdt/viz/raster.ts';
import type { FromWorker, Hints, Images, MaskShape, ToWorker } from './protocol.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const state = (s: 'idle' | 'loading' | 'ready' | 'running' | 'done' | 'error') => (document.body.dataset.state = s);
const view = window as unknown as { mdt: { last: Images | null; kind: string; config: unknown; backend: string } };
view.mdt = { last: null, kind: '', config: null, backend: '' };

for (const id of ['num-heads', 'decode-layer', 'classes', 'count', 'steps', 'cfg', 'seed', 'mask', 'switch']) {
  const v = params.get(id);
  if (v !== null) $<HTMLInputElement>(id).value = v;
}

const send = (m: ToWorker, transfer: Transferable[] = []) => worker.postMessage(m, transfer);
const num = (id: string) => Number($<HTMLInputElement>(id).value);
const optionalNum = (id: string) => ($<HTMLInputElement>(id).value.trim() === '' ? undefined : num(id));

function fail(message: string): void {
  $('error').textContent = message;
  $('status').textContent = '';
  state('error');
  setBusy(false);
}

let canInpaint = false;
function setBusy(busy: boolean): void {
  $<HTMLButtonElement>('sample').disabled = busy || view.mdt.config === null;
  $<HTMLButtonElement>('inpaint').disabled = busy || !canInpaint || view.mdt.last === null;
}

function load(bytes: Uint8Array, name: string): void {
  const hints: Hints = { numHeads: optionalNum('num-heads'), decodeLayer: optionalNum('decode-layer') };
  $('error').textContent = '';
  $('status').textContent = `reading ${name} (${(bytes.length / 2 ** 20).toFixed(1)} MiB) …`;
  state('loading');
  setBusy(true);
  send({ type: 'load', bytes, name, hints, backend: params.get('backend') ?? undefined }, [bytes.buffer]);
}

function labels(): number[] {
  const text = $<HTMLInputElement>('classes').value.trim();
  const classes = text.split(',').map((s) => Number(s.trim()));
  if (text === '' || classes.some((k) => !Number.isInteger(k) || k < 0)) throw new Error(`classes: expected indices like 0,1,2, got "${text}"`);
  const count = num('count');
  if (!Number.isInteger(count) || count < 1) throw new Error(`per class: expected a positive integer, got ${count}`);
  return Array.from({ length: classes.length * count }, (_, i) => classes[i % classes.length]!);
}

function run(type: 'sample' | 'inpaint'): void {
  try {
    const request = { labels: type === 'sample' ? labels() : [...(view.mdt.last?.labels ?? [])], steps: $<HTMLInputElement>('steps').value.trim(), cfgScale: num('cfg'), seed: num('seed') };
    $('error').textContent = '';
    state('running');
    setBusy(true);
    $('status').textContent = `${type === 'sample' ? 'sampling' : 'inpainting'} …`;
    if (type === 'sample') send({ type, ...request });
    else send({ type, ...request, mask: $<HTMLSelectElement>('mask').value as MaskShape, switchFraction: num('switch') });
  } catch (e) {
    fail((e as Error).message);
  }
}

/** The images as the CLI's grid: one column per class; 4-channel latents show channels 0–2 as RGB. */
function draw(images: Images): void {
  const { n, channels: c, size } = images;
  const shown = c === 1 || c === 3 ? images.data : rgbOf(images);
  const cols = new Set(images.labels).size;
  const r = imageGrid(shown, n, c === 1 ? 1 : 3, size, size, cols);
  const canvas = $<HTMLCanvasElement>('grid');
  canvas.width = r.width;
  canvas.height = r.height;
  const scale = Math.max(1, Math.floor(512 / r.width));
  canvas.style.width = `${r.width * scale}px`;
  const rgba = new Uint8ClampedArray(r.width * r.height * 4);
  for (let i = 0; i < r.width * r.height; i++) {
    for (let k = 0; k < 3; k++) rgba[4 * i + k] = r.data[i * r.channels + (r.channels === 1 ? 0 : k)]!;
    rgba[4 * i + 3] = 255;
  }
  canvas.getContext('2d')!.putImageData(new ImageData(rgba, r.width, r.height), 0, 0);
}

function rgbOf({ data, n, channels, size }: Images): Float32Array {
  const plane = size * size;
  const out = new Float32Array(n * 3 * plane);
  for (let k = 0; k < n; k++) out.set(data.subarray(k * channels * plane, (k * channels + 3) * plane), k * 3 * plane);
  return out;
}

worker.onmessage = (e: MessageEvent<FromWorker>) => {
  const m = e.data;
  if (m.type === 'error') return fail(m.message);
  if (m.type === 'progress') {
    $<HTMLProgressElement>('progress').value = m.done / m.total;
    $('status').textContent = `step ${m.done} of ${m.total}`;
    return;
  }
  if (m.type === 'loaded') {
    const c = m.config;
    view.mdt.config = c;
    view.mdt.backend = `${m.engine} ${m.backend}`;
    canInpaint = m.canInpaint;
    const cfg = $<HTMLInputElement>('cfg');
    cfg.disabled = m.fixedCfg !== null;
    if (m.fixedCfg !== null) cfg.value = String(m.fixedCfg);
    else if (c.variant !== 'dit') cfg.value = params.get('cfg') ?? (c.inChannels === 4 ? '3.8' : '1');
    $('info').textContent = `${c.variant} ${c.inputSize}×${c.inputSize}×${c.inChannels}, depth ${c.depth}, width ${c.hiddenSize}, ${c.numHeads} heads, ${c.numClasses} classes on ${m.engine} ${m.backend}${m.tried.length > 0 ? ` (${m.tried.join('; ')})` : ''}${m.notes.length > 0 ? `; ${m.notes.join('; ')}` : ''}${c.inChannels === 4 ? '; 4-channel latents are shown as channels 0–2 (decode them with mdt sample --vae)' : ''}`;
    $('status').textContent = 'ready';
    state('ready');
    setBusy(false);
    if (params.get('autorun') === 'sample') run('sample');
    return;
  }
  view.mdt.last = m.images;
  view.mdt.kind = m.kind;
  draw(m.images);
  $('status').textContent = `${m.kind === 'samples' ? 'sampled' : 'inpainted'} ${m.images.n} images in ${(m.ms / 1000).toFixed(1)} s`;
  state('done');
  setBusy(false);
};

async function loadUrl(url: string, explicit: boolean): Promise<void> {
  const r = await fetch(url);
  if (!r.ok) {
    if (explicit) fail(`${url}: ${r.status} ${r.statusText}; expected a .safetensors checkpoint there`);
    else $('status').textContent = 'no model.safetensors beside the page: drop a checkpoint';
    return;
  }
  load(new Uint8Array(await r.arrayBuffer()), url.split('/').pop() ?? url);
}

const drop = $('drop');
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const f = e.dataTransfer?.files[0];
  if (f) void f.arrayBuffer().then((b) => load(new Uint8Array(b), f.name));
});
$<HTMLInputElement>('file').addEventListener('change', (e) => {
  const f = (e.target as HTMLInputElement).files?.[0];
  if (f) void f.arrayBuffer().then((b) => load(new Uint8Array(b), f.name));
});
$('sample').addEventListener('click', () => run('sample'));
$('inpaint').addEventListener('click', () => run('inpaint'));
void loadUrl(params.get('ckpt') ?? 'model.safetensors', params.has('ckpt')).catch((e: Error) => fail(e.message));
