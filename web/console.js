// The batchd web console (SPEC §11): run, watch and fetch batches from a browser.
// Plain ES module, no framework; talks to the server only through batchd.js.
import { Client, BatchdError, metricValue } from './batchd.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'batchd.token';
const RING = 200; // result rows kept for the table
const MAX_ERRORS = 100; // error lines kept for the list
const MAX_THUMBS = 300; // thumbnails kept (older ones are dropped, their blob URLs revoked)
const MAX_SEGMENTS = 20000; // timeline segments kept

const client = new Client({ token: sessionStorage.getItem(TOKEN_KEY) });
let catalogue = null;
let caps = { stored: false };

// ------------------------------------------------------------------ small helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) e.append(c);
  return e;
}

const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
function fmtMs(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}
function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
function describeError(e) {
  if (e instanceof BatchdError) return `${e.status} ${e.code}: ${e.message}${e.path ? ` (at ${e.path})` : ''}`;
  return e && e.message ? e.message : String(e);
}
function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = el('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// ------------------------------------------------------------------ views (tabs)

const TABS = ['run', 'watch', 'pool', 'history'];
function showView(name) {
  for (const t of TABS) {
    const on = t === name;
    $(`tab-${t}`).setAttribute('aria-selected', String(on));
    $(`tab-${t}`).tabIndex = on ? 0 : -1;
    $(`view-${t}`).hidden = !on;
  }
  document.body.dataset.view = name;
  if (name === 'history') refreshHistory();
  if (name === 'pool') refreshPool();
  if (name === 'watch') drawTimeline();
}
for (const t of TABS) {
  $(`tab-${t}`).addEventListener('click', () => showView(t));
  $(`tab-${t}`).addEventListener('keydown', (e) => {
    const i = TABS.indexOf(t);
    let j = -1;
    if (e.key === 'ArrowRight') j = (i + 1) % TABS.length;
    if (e.key === 'ArrowLeft') j = (i + TABS.length - 1) % TABS.length;
    if (j >= 0) {
      e.preventDefault();
      showView(TABS[j]);
      $(`tab-${TABS[j]}`).focus();
    }
  });
}

// ------------------------------------------------------------------ token

// Escape would close the prompt and leave a page that can do nothing: it stays open.
$('token-dialog').addEventListener('cancel', (e) => e.preventDefault());

function askToken(message = '') {
  const d = $('token-dialog');
  $('token-error').textContent = message;
  if (!d.open) d.showModal();
  $('token-input').focus();
  return new Promise((resolve) => {
    $('token-form').onsubmit = async (ev) => {
      ev.preventDefault();
      const token = $('token-input').value.trim();
      if (token === '') return;
      client.token = token;
      try {
        await client.ops();
      } catch (e) {
        $('token-error').textContent = e instanceof BatchdError && e.status === 401 ? 'The server refused this token.' : describeError(e);
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token-input').value = '';
      d.close();
      $('forget-token').hidden = false;
      resolve();
    };
  });
}
$('forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  client.token = null;
  $('forget-token').hidden = true;
  askToken();
});
// A 401 in the middle of work (token rotated): ask again, then go on.
async function withAuth(fn) {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof BatchdError && e.status === 401) {
      await askToken('The token was refused; enter it again.');
      return fn();
    }
    throw e;
  }
}

// ------------------------------------------------------------------ params forms

// One form control for a catalogue param {name, type, help, min, max, choices, default}.
function paramControl(p, idPrefix) {
  const id = `${idPrefix}-${p.name}`;
  const label = el('label', { for: id, text: p.name, title: p.help || '' });
  let input;
  if (p.choices) {
    input = el('select', { id });
    if (!p.required && p.default === undefined) input.append(el('option', { value: '', text: '(default)' }));
    for (const c of p.choices) input.append(el('option', { value: String(c), text: String(c), selected: p.default === c }));
  } else if (p.type === 'boolean') {
    input = el('input', { id, type: 'checkbox' });
    input.checked = !!p.default;
  } else if (p.type === 'integer' || p.type === 'number') {
    input = el('input', { id, type: 'number', step: p.type === 'integer' ? '1' : 'any', min: p.min, max: p.max, required: !!p.required, placeholder: p.default !== undefined ? String(p.default) : '' });
  } else {
    input = el('input', { id, type: 'text', placeholder: p.default !== undefined ? JSON.stringify(p.default) : 'JSON' });
  }
  input.dataset.param = p.name;
  input.dataset.type = p.choices && typeof p.choices[0] === 'number' ? 'integer' : p.type;
  if (p.help) input.setAttribute('aria-description', p.help);
  return { label, input };
}

// The params object of the controls under ROOT: only what was set (defaults stay the server's).
function readParams(root) {
  const out = {};
  for (const input of root.querySelectorAll('[data-param]')) {
    const name = input.dataset.param;
    const type = input.dataset.type;
    if (type === 'boolean') {
      out[name] = input.checked;
    } else if (input.value === '') {
      continue;
    } else if (type === 'integer' || type === 'number') {
      out[name] = Number(input.value);
    } else if (type === 'string') {
      out[name] = input.value;
    } else {
      out[name] = JSON.parse(input.value);
    }
  }
  return out;
}

// ------------------------------------------------------------------ run: numbers

function numOps() {
  return catalogue.ops.filter((o) => !o.image);
}
function currentNumOp() {
  return numOps().find((o) => o.name === $('num-op').value);
}
function fillNumOps() {
  const sel = $('num-op');
  sel.replaceChildren(...numOps().map((o) => el('option', { value: o.name, text: o.name })));
  sel.value = numOps().some((o) => o.name === 'sqrt') ? 'sqrt' : sel.value;
  onNumOp();
}
function onNumOp() {
  const op = currentNumOp();
  if (!op) return;
  $('num-op-help').textContent = `${op.summary}. Input: ${op.input}.`;
  const fs = $('num-params');
  fs.replaceChildren(el('legend', { text: 'Params' }));
  for (const p of op.params) {
    const { label, input } = paramControl(p, 'num-p');
    fs.append(label, input);
  }
  fs.classList.toggle('none', op.params.length === 0);
  const numeric = typeof op.example === 'number';
  document.querySelector(`input[name="num-src"][value="${numeric ? 'range' : 'paste'}"]`).checked = true;
  if (!numeric) $('num-inputs').value = JSON.stringify([op.example, op.example, op.example]);
  onNumSrc();
}
function onNumSrc() {
  const range = document.querySelector('input[name="num-src"]:checked').value === 'range';
  $('num-range').hidden = !range;
  $('num-paste').hidden = range;
  countNumInputs();
}
function rangeSpec() {
  const from = Number($('num-from').value);
  const to = Number($('num-to').value);
  const step = Number($('num-step').value) || 1;
  const n = step > 0 && to >= from ? Math.floor((to - from) / step + 1e-9) + 1 : 0;
  return { from, to, step, n };
}
function countNumInputs() {
  let text = '';
  try {
    if (!$('num-range').hidden) {
      const { n, from, step } = rangeSpec();
      text = `${fmtInt(n)} inputs: ${from}, ${from + step}, … ${from + (n - 1) * step}`;
    } else {
      text = `${fmtInt(pastedInputs().length)} inputs`;
    }
    $('num-error').textContent = '';
  } catch (e) {
    text = '';
  }
  $('num-count').textContent = text;
}
// The pasted inputs: a JSON array, or one JSON value per line.
function pastedInputs() {
  const t = $('num-inputs').value.trim();
  if (t === '') return [];
  if (t[0] === '[') {
    const v = JSON.parse(t);
    if (Array.isArray(v)) return v;
  }
  return t.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l));
}
// The request body as a string; a range's inputs are written out directly, not through
// JSON.stringify of a million numbers.
function numBody() {
  const op = currentNumOp();
  const spec = { op: op.name };
  const params = readParams($('num-params'));
  if (Object.keys(params).length > 0) spec.params = params;
  spec.order = $('num-order').value;
  const cs = $('num-chunksize').value.trim();
  if (cs !== '' && cs !== 'auto') spec.chunksize = Number(cs);
  if ($('num-timeout').value !== '') spec.timeout_ms = Number($('num-timeout').value);
  if ($('num-timing').checked) spec.timing = true;
  let inputs;
  let total;
  if (!$('num-range').hidden) {
    const { from, step, n } = rangeSpec();
    if (n <= 0) throw new Error('the range is empty');
    const parts = new Array(n);
    const whole = Number.isInteger(from) && Number.isInteger(step);
    for (let i = 0; i < n; i++) parts[i] = whole ? String(from + i * step) : String(Number((from + i * step).toPrecision(12)));
    inputs = `[${parts.join(',')}]`;
    total = n;
  } else {
    const v = pastedInputs();
    inputs = JSON.stringify(v);
    total = v.length;
  }
  const head = JSON.stringify(spec);
  return { body: `${head.slice(0, -1)},"inputs":${inputs}}`, total, op: op.name };
}
$('num-op').addEventListener('change', onNumOp);
for (const r of document.querySelectorAll('input[name="num-src"]')) r.addEventListener('change', onNumSrc);
for (const id of ['num-from', 'num-to', 'num-step', 'num-inputs']) $(id).addEventListener('input', countNumInputs);
$('num-example').addEventListener('click', () => {
  const op = currentNumOp();
  $('num-inputs').value = JSON.stringify([op.example]);
  countNumInputs();
});
$('num-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  let req;
  try {
    req = numBody();
  } catch (e) {
    $('num-error').textContent = `Inputs: ${e.message}`;
    return;
  }
  $('num-error').textContent = '';
  const async = $('num-async').checked && caps.stored;
  startRun({ kind: 'numbers', title: `${req.op} of ${fmtInt(req.total)} inputs`, body: req.body, total: req.total, async });
});

// ------------------------------------------------------------------ run: images

let files = [];
const imgExt = /\.(jpe?g|png)$/i;
function setFiles(list) {
  files = list.filter((f) => imgExt.test(f.name) || /^image\/(jpeg|png)$/.test(f.type));
  files.sort((a, b) => (a.webkitRelativePath || a.name).localeCompare(b.webkitRelativePath || b.name));
  const bytes = files.reduce((s, f) => s + f.size, 0);
  $('img-count').textContent = files.length ? `${files.length} image${files.length > 1 ? 's' : ''}, ${fmtBytes(bytes)}` : 'No files yet.';
  $('img-clear').hidden = files.length === 0;
}
$('img-files').addEventListener('change', (e) => setFiles([...files, ...e.target.files]));
$('img-folder').addEventListener('change', (e) => setFiles([...files, ...e.target.files]));
$('img-clear').addEventListener('click', () => {
  setFiles([]);
  $('img-files').value = '';
  $('img-folder').value = '';
});
// Every file under a dropped folder entry.
async function entryFiles(entry) {
  if (entry.isFile) return [await new Promise((res, rej) => entry.file(res, rej))];
  if (!entry.isDirectory) return [];
  const reader = entry.createReader();
  const out = [];
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
    if (batch.length === 0) break;
    for (const e of batch) out.push(...(await entryFiles(e)));
  }
  return out;
}
// A file dropped beside the drop zone must not make the browser leave the page to show it.
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());
const drop = $('drop');
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', async (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  const got = entries.length ? (await Promise.all(entries.map(entryFiles))).flat() : [...e.dataTransfer.files];
  setFiles([...files, ...got]);
});

function imageOp() {
  return catalogue.ops.find((o) => o.image);
}
function addStep(name, list = $('img-steps')) {
  const def = imageOp().steps.find((s) => s.op === name);
  if (!def) return;
  const n = document.querySelectorAll('.steps > li').length;
  const prefix = `step${Date.now().toString(36)}${n}`;
  const params = el('div', { class: 'step-params' });
  for (const p of def.params) {
    const { label, input } = paramControl(p, prefix);
    if (def.op === 'thumbnail' || def.op === 'resize') {
      if (p.name === 'width' || p.name === 'height') input.value = '256';
    }
    if (def.op === 'blur' && p.name === 'sigma') input.value = '2';
    label.prepend(input);
    params.append(label);
  }
  const li = el('li', { 'data-op': def.op });
  const up = el('button', { type: 'button', class: 'small secondary', 'aria-label': `Move ${def.op} up`, text: '↑' });
  const down = el('button', { type: 'button', class: 'small secondary', 'aria-label': `Move ${def.op} down`, text: '↓' });
  const del = el('button', { type: 'button', class: 'small secondary', 'aria-label': `Remove ${def.op}`, text: 'Remove' });
  up.onclick = () => li.previousElementSibling && li.parentNode.insertBefore(li, li.previousElementSibling);
  down.onclick = () => li.nextElementSibling && li.parentNode.insertBefore(li.nextElementSibling, li);
  del.onclick = () => li.remove();
  li.append(el('div', { class: 'step-head' }, el('strong', { text: def.op }), el('span', { class: 'help', text: def.help }), up, down, del), params);
  list.append(li);
}

// A variant: a name, its own steps (after the shared pipeline) and its own format.
let variantSeq = 0;
function addVariant() {
  const op = imageOp();
  const k = ++variantSeq;
  const li = el('li', { class: 'variant' });
  const name = el('input', { id: `var-name-${k}`, type: 'text', value: ['small', 'medium', 'large'][k - 1] || `v${k}`, pattern: '[A-Za-z0-9_\\-]{1,32}', required: true });
  name.dataset.role = 'name';
  const fmt = el('select', { id: `var-fmt-${k}` });
  fmt.dataset.role = 'format';
  const choices = (op.params.find((p) => p.name === 'format') || { choices: ['same'] }).choices;
  fmt.append(el('option', { value: '', text: '(as above)' }), ...choices.map((c) => el('option', { value: c, text: c })));
  const steps = el('ol', { class: 'steps' });
  const pick = el('select', { id: `var-step-${k}` }, ...op.steps.map((s) => el('option', { value: s.op, text: s.op })));
  const add = el('button', { type: 'button', class: 'small secondary', text: 'Add step' });
  add.onclick = () => addStep(pick.value, steps);
  const del = el('button', { type: 'button', class: 'small secondary', text: 'Remove variant', 'aria-label': `Remove variant ${k}` });
  del.onclick = () => li.remove();
  li.append(
    el('div', { class: 'row' }, el('label', { for: name.id, text: 'Name' }), name, el('label', { for: fmt.id, text: 'Format' }), fmt, del),
    steps,
    el('div', { class: 'row' }, el('label', { for: pick.id, text: 'Step' }), pick, add),
  );
  $('img-variants').append(li);
  addStep('thumbnail', steps);
}
$('img-variant-add').addEventListener('click', addVariant);
const stepsOf = (ol) => [...ol.children].map((li) => ({ op: li.dataset.op, ...readParams(li) }));
function fillImageForm() {
  const op = imageOp();
  if (!op) {
    $('img-form').querySelector('h2').textContent = 'Images (this server has no image op)';
    return;
  }
  $('img-step-add').replaceChildren(...op.steps.map((s) => el('option', { value: s.op, text: s.op })));
  const fmt = op.params.find((p) => p.name === 'format');
  $('img-format').replaceChildren(...(fmt ? fmt.choices : ['same']).map((c) => el('option', { value: c, text: c, selected: c === 'jpeg' })));
  if ($('img-steps').children.length === 0) addStep('thumbnail');
}
$('img-step-add-btn').addEventListener('click', () => addStep($('img-step-add').value));
function imageBatch() {
  const pipeline = stepsOf($('img-steps'));
  const params = { pipeline, format: $('img-format').value };
  const variants = [...$('img-variants').children].map((li) => {
    const v = { name: li.querySelector('[data-role="name"]').value, pipeline: stepsOf(li.querySelector('.steps')) };
    const f = li.querySelector('[data-role="format"]').value;
    if (f !== '') v.format = f;
    return v;
  });
  if (variants.length > 0) params.variants = variants;
  if ($('img-format').value === 'jpeg' && $('img-quality').value !== '') params.quality = Number($('img-quality').value);
  const extra = $('img-extra').value.trim();
  if (extra !== '') Object.assign(params, JSON.parse(extra));
  const batch = { op: imageOp().name, params };
  if ($('img-timing').checked) batch.timing = true;
  return batch;
}
function imageForm(batch, list) {
  const form = new FormData();
  form.append('batch', JSON.stringify(batch));
  for (const f of list) form.append('file', f, f.name);
  return form;
}
$('img-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (files.length === 0) {
    $('img-error').textContent = 'Choose or drop some JPEG or PNG files first.';
    return;
  }
  let batch;
  try {
    batch = imageBatch();
  } catch (e) {
    $('img-error').textContent = `Params: ${e.message}`;
    return;
  }
  $('img-error').textContent = '';
  const names = files.map((f) => f.webkitRelativePath || f.name);
  const async = $('img-async').checked && caps.stored;
  startRun({ kind: 'images', title: `${files.length} images: ${batch.params.pipeline.map((s) => s.op).join(' → ') || 'no steps'}`, batch, files: [...files], names, total: files.length, async });
});
for (const r of document.querySelectorAll('input[name="kind"]')) {
  r.addEventListener('change', () => {
    const images = document.querySelector('input[name="kind"]:checked').value === 'images';
    $('img-form').hidden = !images;
    $('num-form').hidden = images;
  });
}

// ------------------------------------------------------------------ watch: state

let run = null; // the batch being watched
let renderTimer = 0;

function newRun(desc) {
  return {
    ...desc,
    state: 'running',
    done: 0,
    ok: 0,
    failed: 0,
    started: performance.now(),
    ended: 0,
    summary: null,
    ring: new Array(RING), // a circular buffer: ringN lines written so far
    ringN: 0,
    errors: [],
    codes: new Map(),
    segments: [], // [worker, start_ms, end_ms, failed], jobs that ran back to back merged
    lastSeg: [], // per worker: its newest segment
    mergeGap: 0.05, // ms: a job that starts this soon after the last one extends its segment
    workers: 0,
    maxEnd: 0,
    thumbs: 0,
    abort: null,
    timelineDirty: true,
  };
}

function onLine(r, line, raw) {
  if (line.summary) {
    r.summary = line.summary;
    return;
  }
  if (line.progress && line.index === undefined) {
    const p = line.progress;
    if (p.total) r.total = p.total;
    return;
  }
  if (line.index === undefined) return; // a line of a kind this page does not know
  r.done += 1;
  if (line.error) {
    r.failed += 1;
    r.codes.set(line.error.code, (r.codes.get(line.error.code) || 0) + 1);
    r.errors.push(line);
    if (r.errors.length > MAX_ERRORS) r.errors.shift();
  } else {
    r.ok += 1;
  }
  if (line.worker !== undefined && line.start_ms !== undefined) addSegment(r, line.worker, line.start_ms, line.end_ms, line.error ? 1 : 0);
  if (r.kind === 'images') addThumbs(r, line);
  // the table's ring keeps a short text, not the line (an image result is large)
  let value = line.error || line.result;
  if (r.kind === 'images' && line.result && typeof line.result === 'object') value = imageText(line.result);
  else if (!line.error && raw !== undefined) value = { raw: resultText(raw) };
  r.ring[r.ringN % RING] = [line.index, value, line.worker, line.end_ms !== undefined ? line.end_ms - line.start_ms : undefined, !!line.error];
  r.ringN += 1;
  scheduleRender();
}

// The timeline keeps a bounded number of segments at any batch size: a job that starts
// right after its worker's previous one (a chunk) extends that segment, and when there are
// still too many, the gap that counts as "right after" doubles and they are merged again.
function addSegment(r, w, start, end, bad) {
  if (w + 1 > r.workers) r.workers = w + 1;
  if (end > r.maxEnd) r.maxEnd = end;
  r.timelineDirty = true;
  const last = r.lastSeg[w];
  if (last && last[3] === bad && start >= last[1] && start - last[2] <= r.mergeGap) {
    if (end > last[2]) last[2] = end;
    return;
  }
  const seg = [w, start, end, bad];
  r.segments.push(seg);
  r.lastSeg[w] = seg;
  if (r.segments.length <= MAX_SEGMENTS) return;
  r.mergeGap *= 2;
  const old = r.segments.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  r.segments = [];
  r.lastSeg = [];
  for (const s of old) {
    const l = r.lastSeg[s[0]];
    if (l && l[3] === s[3] && s[1] - l[2] <= r.mergeGap) {
      if (s[2] > l[2]) l[2] = s[2];
    } else {
      r.segments.push(s);
      r.lastSeg[s[0]] = s;
    }
  }
}

// The result as the server wrote it (2.0 stays 2.0, as JSON.parse would not keep it): the
// text after "result": and before the timing fields the server appends, or the closing brace.
function resultText(raw) {
  const at = raw.indexOf('"result":');
  if (at < 0) return raw;
  const from = at + 9;
  const timing = raw.lastIndexOf(',"worker":');
  return raw.slice(from, timing > from ? timing : raw.lastIndexOf('}'));
}

function imageText(res) {
  if (res.variants) return Object.entries(res.variants).map(([k, v]) => `${k}: ${imageText(v)}`).join('; ');
  return `${res.format} ${res.width}×${res.height}, ${fmtBytes(res.bytes || 0)}${res.path ? ` → ${res.path}` : ''}`;
}

function b64Blob(data, format) {
  const bin = atob(data);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type: format === 'png' ? 'image/png' : 'image/jpeg' });
}

function addThumbs(r, line) {
  $('w-thumbs-card').hidden = false;
  const grid = $('w-thumbs');
  const name = r.names ? r.names[line.index] : `#${line.index}`;
  const outs = [];
  if (line.error) {
    grid.append(el('li', {}, el('div', { class: 'fail', text: `${line.error.code}: ${line.error.message}` }), el('figcaption', { text: name })));
  } else if (line.result && line.result.variants) {
    for (const [k, v] of Object.entries(line.result.variants)) outs.push([`${name} (${k})`, v]);
  } else if (line.result) {
    outs.push([name, line.result]);
  }
  for (const [label, res] of outs) {
    if (!res.data) {
      grid.append(el('li', {}, el('div', { class: 'fail', text: res.path || 'no inline data' }), el('figcaption', { text: label })));
      continue;
    }
    const url = URL.createObjectURL(b64Blob(res.data, res.format));
    const img = el('img', { src: url, alt: `${label}: ${res.width}×${res.height} ${res.format}`, loading: 'lazy', width: res.width, height: res.height });
    img.dataset.index = String(line.index);
    const fig = el('figure', { style: null }, img, el('figcaption', { text: `${label} · ${res.width}×${res.height}`, title: label }));
    fig.style.margin = '0';
    grid.append(el('li', {}, fig));
    r.thumbs += 1;
  }
  while (grid.children.length > MAX_THUMBS) {
    const old = grid.firstElementChild.querySelector('img');
    if (old) URL.revokeObjectURL(old.src);
    grid.firstElementChild.remove();
  }
}

function clearWatch() {
  for (const img of $('w-thumbs').querySelectorAll('img')) URL.revokeObjectURL(img.src);
  $('w-thumbs').replaceChildren();
  $('w-thumbs-card').hidden = true;
  $('w-errors').replaceChildren();
  $('w-error-codes').replaceChildren();
  $('w-results').tBodies[0].replaceChildren();
  $('w-message').textContent = '';
  $('w-upload-box').hidden = true;
}

function scheduleRender() {
  if (renderTimer) return;
  renderTimer = setTimeout(() => {
    renderTimer = 0;
    render();
  }, 100);
}

function render() {
  const r = run;
  if (!r) return;
  $('w-title').textContent = r.title;
  const badge = $('w-state');
  badge.textContent = r.state;
  badge.className = `badge ${r.state}`;
  const total = r.total || 0;
  $('w-progress').max = Math.max(1, total);
  $('w-progress').value = r.done;
  $('w-done').textContent = `${fmtInt(r.done)} / ${fmtInt(total)}`;
  $('w-ok').textContent = fmtInt(r.ok);
  $('w-failed').textContent = fmtInt(r.failed);
  const elapsed = (r.ended || performance.now()) - r.started;
  const rate = elapsed > 0 ? (r.done / elapsed) * 1000 : 0;
  $('w-rate').textContent = r.done ? `${rate >= 100 ? fmtInt(rate) : rate.toFixed(1)}/s` : '–';
  $('w-eta').textContent = r.state === 'running' && rate > 0 && total > r.done ? fmtMs(((total - r.done) / rate) * 1000) : '–';
  $('w-elapsed').textContent = fmtMs(elapsed);
  $('w-thumbs-count').textContent = r.kind === 'images' ? `(${r.thumbs})` : '';
  // errors
  $('w-errors-count').textContent = r.failed ? `(${fmtInt(r.failed)})` : '';
  $('w-no-errors').hidden = r.failed > 0;
  $('w-error-codes').replaceChildren(...[...r.codes].map(([c, n]) => el('li', { text: `${c} × ${fmtInt(n)}` })));
  $('w-errors').replaceChildren(...r.errors.slice(-MAX_ERRORS).reverse().map((l) => el('li', {}, `#${l.index} `, el('code', { text: l.error.code }), ` ${l.error.message}`)));
  // table: newest first
  const rows = [];
  for (let k = r.ringN - 1; k >= 0 && k >= r.ringN - RING; k--) {
    const [index, value, worker, ms, bad] = r.ring[k % RING];
    let text;
    if (bad) text = `${value.code}: ${value.message}`;
    else if (r.kind === 'images' && typeof value === 'string') text = value;
    else if (value && value.raw !== undefined) text = value.raw;
    else text = JSON.stringify(value);
    rows.push(el('tr', {}, el('td', { text: String(index) }), el('td', { class: bad ? 'res bad' : 'res', text, title: text }), el('td', { text: worker === undefined ? '' : String(worker) }), el('td', { text: ms === undefined ? '' : ms.toFixed(2) })));
  }
  $('w-results').tBodies[0].replaceChildren(...rows);
  const running = r.state === 'running';
  $('w-cancel').disabled = !running || !!r.cancelRequested;
  $('w-resubmit').disabled = running || !r.resubmit;
  $('w-dl-ndjson').disabled = running || !r.download;
  $('w-dl-json').disabled = running || !r.download;
  $('w-dl-tar').disabled = running || !r.download || r.kind !== 'images';
  if (r.timelineDirty && !$('view-watch').hidden) drawTimeline();
}

function drawTimeline() {
  const c = $('w-timeline');
  const r = run;
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(100, c.clientWidth);
  const workers = r ? Math.max(r.workers, r.summary ? r.summary.workers || 0 : 0) : 0;
  const rowH = 22;
  const height = Math.max(60, 24 + workers * rowH);
  c.width = Math.round(width * dpr);
  c.height = Math.round(height * dpr);
  c.style.height = `${height}px`;
  const g = c.getContext('2d');
  g.scale(dpr, dpr);
  g.clearRect(0, 0, width, height);
  g.font = '12px system-ui, sans-serif';
  g.fillStyle = '#4f5966';
  if (!r || r.segments.length === 0) {
    g.fillText(r ? 'No timing yet (tick "Timing" to see which worker ran which job).' : 'Run a batch to see its timeline.', 8, 30);
    $('w-timeline-note').textContent = '';
    return;
  }
  r.timelineDirty = false;
  const left = 70;
  const span = Math.max(r.maxEnd, 0.001);
  const sx = (width - left - 8) / span;
  for (let w = 0; w < workers; w++) {
    g.fillStyle = '#4f5966';
    g.fillText(`worker ${w}`, 6, 16 + w * rowH + 12);
    g.fillStyle = '#eef1f4';
    g.fillRect(left, 16 + w * rowH, width - left - 8, rowH - 6);
  }
  for (const [w, s, e, bad] of r.segments) {
    g.fillStyle = bad ? '#b42318' : w % 2 ? '#2f7fd1' : '#0b5cad';
    g.fillRect(left + s * sx, 16 + w * rowH, Math.max(1, (e - s) * sx), rowH - 6);
  }
  g.fillStyle = '#4f5966';
  g.fillText('0', left, 12);
  const endLabel = fmtMs(span);
  g.fillText(endLabel, width - 8 - g.measureText(endLabel).width, 12);
  $('w-timeline-note').textContent = `${fmtInt(r.done)} jobs; a bar is a job, or jobs that ran back to back (a chunk); red: failed.`;
}
window.addEventListener('resize', () => run && !$('view-watch').hidden && drawTimeline());

function finish(r, state, message) {
  clearTimeout(renderTimer); // the render below is the last: none left pending after it
  renderTimer = 0;
  r.state = state;
  r.ended = performance.now();
  if (message !== undefined) $('w-message').textContent = message;
  r.abort = null;
  render();
  drawTimeline();
  refreshPool();
}

// ------------------------------------------------------------------ watch: runs

async function startRun(desc) {
  if (run && run.state === 'running' && run.abort) run.abort();
  clearWatch();
  const r = newRun(desc);
  run = r;
  r.resubmit = () => startRun(desc);
  showView('watch');
  render();
  try {
    if (desc.async) {
      await runAsync(r, desc);
      return;
    }
    let result;
    if (desc.kind === 'numbers') {
      const ctl = new AbortController();
      r.abort = () => ctl.abort();
      r.download = (accept) => client.fetchBlob(desc.body, accept);
      result = await withAuth(() => client.stream(desc.body, { onLine: (l, raw) => onLine(r, l, raw), signal: ctl.signal }));
    } else {
      $('w-upload-box').hidden = false;
      r.download = (accept) => client.fetchBlob(imageForm(desc.batch, desc.files), accept);
      result = await withAuth(() => {
        const up = client.upload(imageForm(desc.batch, desc.files), {
          onLine: (l, raw) => onLine(r, l, raw),
          onUploadProgress: showUpload,
        });
        r.abort = up.abort;
        return up.promise;
      });
    }
    r.requestId = result.requestId;
    if (result.summary) {
      const s = result.summary;
      r.total = s.jobs;
      finish(r, r.state === 'cancelled' ? 'cancelled' : 'done', `Done: ${fmtInt(s.ok)} ok, ${fmtInt(s.failed)} failed in ${fmtMs(s.elapsed_ms)} on ${s.workers} workers (chunk size ${s.chunksize}); request ${s.request_id}.`);
    } else {
      finish(r, 'failed', 'The stream ended without its summary: the jobs not shown were not done.');
    }
  } catch (e) {
    if (e.name === 'AbortError') finish(r, 'cancelled', 'Cancelled: the connection was closed, and the server cancelled the jobs not yet run.');
    else finish(r, 'failed', describeError(e));
  }
}

// An async (stored) batch: 202, then its results followed over SSE with reconnection.
// Images are uploaded with the same Prefer: respond-async (their progress shown).
async function runAsync(r, desc) {
  let doc;
  if (desc.kind === 'numbers') {
    doc = await withAuth(() => client.submitAsync(desc.body));
  } else {
    $('w-upload-box').hidden = false;
    const result = await withAuth(() => {
      const up = client.upload(imageForm(desc.batch, desc.files), {
        headers: { Prefer: 'respond-async' },
        onUploadProgress: (loaded, total) => showUpload(loaded, total),
      });
      r.abort = up.abort;
      return up.promise;
    });
    doc = result.accepted;
    if (!doc) throw new BatchdError(200, { code: 'not_async', message: 'the server streamed the batch instead of storing it' });
  }
  followStored(r, doc.id, doc);
}
function showUpload(loaded, total) {
  $('w-upload').value = total ? loaded / total : 0;
  $('w-upload-text').textContent = total ? `${Math.round((loaded / total) * 100)}% of ${fmtBytes(total)}` : fmtBytes(loaded);
}

// Following stops when the page leaves the batch (abort); Cancel also cancels it on the
// server. The batch followed is remembered for the tab, so a reload picks it up again (from
// its first result: the page rebuilds its counts from the stored lines).
const FOLLOW_KEY = 'batchd.following';
async function followStored(r, id, doc) {
  const ctl = new AbortController();
  r.abort = () => ctl.abort(); // stop following: the batch goes on on the server
  // Cancel: DELETE answers once the cancel is committed; the cancelled jobs' lines and the
  // summary ("cancelled": true) then arrive on the stream like any other, so the counts end
  // complete. A batch that ended meanwhile is forgotten by that DELETE (204).
  r.cancel = async () => {
    r.cancelRequested = true;
    render();
    $('w-message').textContent = `Cancelling stored batch ${id}…`;
    try {
      const final = await withAuth(() => client.cancel(id));
      if (final === null) {
        r.forgotten = true;
        ctl.abort();
      }
    } catch (e) {
      r.cancelRequested = false;
      $('w-message').textContent = `Cancel failed: ${describeError(e)}`;
      render();
    }
  };
  r.storedId = id;
  const img = catalogue && imageOp();
  if (doc && img && doc.op === img.name) r.kind = 'images';
  sessionStorage.setItem(FOLLOW_KEY, id);
  r.download = (accept) => client.resultsBlob(id, accept);
  if (doc && doc.jobs) r.total = doc.jobs.total;
  // elapsed and rate from the batch's own start (a reload reads its stored lines at once)
  const startedAt = doc && doc.started_at ? Date.parse(doc.started_at) : NaN;
  if (Number.isFinite(startedAt) && Date.now() >= startedAt) r.started = performance.now() - (Date.now() - startedAt);
  $('w-message').textContent = `Stored batch ${id}: following its results (reconnects by itself).`;
  try {
    await client.follow(id, {
      signal: ctl.signal,
      onState: (s) => {
        if (r.cancelRequested) return;
        if (s === 'retrying') $('w-message').textContent = `Connection lost; reconnecting to ${id}…`;
        if (s === 'open') $('w-message').textContent = `Stored batch ${id}: following its results live.`;
      },
      onEvent: (ev) => {
        if (ev.event === 'summary') onLine(r, { summary: ev.data.summary || ev.data });
        else if (ev.event === 'progress') onLine(r, { progress: ev.data.progress || ev.data });
        else if (ev.data && typeof ev.data === 'object') onLine(r, ev.data, ev.text);
      },
    });
    const s = r.summary || {};
    r.total = s.jobs || r.total;
    sessionStorage.removeItem(FOLLOW_KEY);
    const how = s.cancelled ? 'Cancelled' : 'Done';
    finish(r, s.cancelled ? 'cancelled' : 'done', `${how}: ${fmtInt(r.ok)} ok, ${fmtInt(r.failed)} failed (stored batch ${id}).`);
  } catch (e) {
    if (e.name === 'AbortError') {
      if (r.forgotten || r.state === 'cancelled') sessionStorage.removeItem(FOLLOW_KEY);
      if (r.forgotten) finish(r, r.summary ? 'done' : 'stopped', `Stored batch ${id} had ended before the cancel; the server has now forgotten it.`);
      else finish(r, r.state === 'cancelled' ? 'cancelled' : 'stopped', r.state === 'cancelled' ? `Cancelled stored batch ${id}.` : `Stopped following ${id}; it goes on on the server.`);
    } else if (e instanceof BatchdError && e.status === 404 && r.done === 0 && doc) {
      // a streamed batch (listed while it runs): its results go only to its own client
      sessionStorage.removeItem(FOLLOW_KEY);
      watchStatus(r, id);
    } else {
      sessionStorage.removeItem(FOLLOW_KEY);
      finish(r, 'failed', describeError(e));
    }
  }
}

// A streamed batch of another client, watched from its status document (SPEC §8: it can be
// read and cancelled while it runs; its id is 404 once it ends, and it keeps no results).
async function watchStatus(r, id) {
  const ctl = new AbortController();
  r.storedId = null;
  r.download = null;
  r.abort = () => ctl.abort();
  r.cancel = async () => {
    r.cancelRequested = true;
    render();
    try {
      await withAuth(() => client.cancel(id));
    } catch (e) {
      $('w-message').textContent = `Cancel failed: ${describeError(e)}`;
    }
  };
  const note = `Batch ${id} streams its results to the client that sent it: only its counts are shown here.`;
  $('w-message').textContent = note;
  for (;;) {
    let doc;
    try {
      doc = await client.status(id, { signal: ctl.signal });
    } catch (e) {
      if (e.name === 'AbortError') return finish(r, 'stopped', `Stopped watching ${id}.`);
      if (e instanceof BatchdError && e.status === 404) return finish(r, r.cancelRequested ? 'cancelled' : 'ended', `Batch ${id} has ended; a streamed batch is not kept.`);
      return finish(r, 'failed', describeError(e));
    }
    const j = doc.jobs || {};
    r.total = j.total || r.total;
    r.ok = j.ok || 0;
    r.failed = j.failed || 0;
    r.done = r.ok + r.failed;
    if (doc.state === 'done' || doc.state === 'cancelled') return finish(r, doc.state, note);
    render();
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

$('w-cancel').addEventListener('click', () => {
  if (!run || run.state !== 'running') return;
  if (run.cancel) {
    if (!run.cancelRequested) run.cancel();
  } else if (run.abort) {
    run.state = 'cancelled';
    run.abort();
  }
});
$('w-resubmit').addEventListener('click', () => run && run.resubmit && run.resubmit());
for (const [id, accept, ext] of [['w-dl-ndjson', 'application/x-ndjson', 'ndjson'], ['w-dl-json', 'application/json', 'json'], ['w-dl-tar', 'application/x-tar', 'tar']]) {
  $(id).addEventListener('click', async () => {
    const r = run;
    if (!r || !r.download) return;
    const btn = $(id);
    btn.disabled = true;
    $('w-message').textContent = r.storedId ? `Preparing the ${ext.toUpperCase()} download…` : `Preparing the ${ext.toUpperCase()} download (the batch runs again)…`;
    try {
      const blob = await withAuth(() => r.download(accept));
      saveBlob(blob, `batchd-${r.storedId || r.requestId || 'batch'}.${ext}`);
      $('w-message').textContent = `Downloaded ${ext.toUpperCase()}, ${fmtBytes(blob.size)}.`;
    } catch (e) {
      $('w-message').textContent = `Download failed: ${describeError(e)}`;
    } finally {
      btn.disabled = false;
    }
  });
}
$('follow-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const id = $('follow-id').value.trim();
  if (!caps.stored || id === '') return;
  followId(id);
});
function followId(id) {
  if (run && run.state === 'running' && run.abort) run.abort();
  clearWatch();
  const r = newRun({ kind: 'numbers', title: `Stored batch ${id}`, total: 0 });
  run = r;
  showView('watch');
  render();
  client.status(id).then((doc) => {
    r.title = `${doc.op || 'batch'} ${id}`;
    followStored(r, id, doc);
  }, (e) => finish(r, 'failed', describeError(e)));
}

// ------------------------------------------------------------------ pool

async function refreshPool() {
  let m;
  try {
    m = await client.metrics();
  } catch (e) {
    $('pool-brief').textContent = e instanceof BatchdError && e.status === 401 ? '' : 'server unreachable';
    return;
  }
  const busy = metricValue(m, 'batchd_workers', { state: 'busy' });
  const idle = metricValue(m, 'batchd_workers', { state: 'idle' });
  const queue = metricValue(m, 'batchd_queue_depth');
  const batches = metricValue(m, 'batchd_batches_in_flight');
  $('pool-brief').textContent = `${busy + idle} workers: ${busy} busy · queue ${fmtInt(queue)}`;
  $('p-busy').textContent = fmtInt(busy);
  $('p-idle').textContent = fmtInt(idle);
  $('p-queue').textContent = fmtInt(queue);
  $('p-batches').textContent = fmtInt(batches);
  $('p-draining').textContent = metricValue(m, 'batchd_draining') ? 'yes' : 'no';
  const boxes = [];
  for (let i = 0; i < busy + idle; i++) boxes.push(el('span', { class: i < busy ? 'busy' : 'idle', text: i < busy ? 'busy' : 'idle', title: i < busy ? 'busy' : 'idle' }));
  $('p-workers').replaceChildren(...boxes);
  $('p-workers').setAttribute('aria-label', `${busy} busy, ${idle} idle`);
  const rows = (m.batchd_worker_restarts_total || []).map((s) => el('tr', {}, el('td', { text: s.labels.cause || '' }), el('td', { text: fmtInt(s.value) })));
  $('p-restarts').tBodies[0].replaceChildren(...rows);
  $('p-updated').textContent = `Updated ${new Date().toLocaleTimeString()} from /metrics.`;
}

// ------------------------------------------------------------------ history

async function refreshHistory() {
  const body = $('h-table').tBodies[0];
  $('h-table').hidden = !caps.stored;
  $('follow-form').hidden = !caps.stored;
  if (!caps.stored) {
    $('h-note').textContent = 'This server keeps no batches (stored batches, SPEC §8, are not enabled): a streamed batch lives only as long as its connection. Runs from this tab are on the Watch view.';
    $('h-refresh').hidden = true;
    body.replaceChildren();
    return;
  }
  try {
    const list = await client.list({ limit: 50 });
    const docs = list.batches || [];
    $('h-note').textContent = docs.length ? '' : 'No stored batches yet: tick "Keep on the server (async)" on the Run view to make one.';
    $('h-table').hidden = docs.length === 0;
    body.replaceChildren(...docs.map((d) => {
      const btn = el('button', { type: 'button', class: 'small', text: 'Watch', 'aria-label': `Watch ${d.id}` });
      btn.onclick = () => followId(d.id);
      return el('tr', {}, el('td', {}, el('code', { text: d.id })), el('td', {}, el('span', { class: `badge ${d.state}`, text: d.state })), el('td', { text: d.op || '' }), el('td', { text: d.jobs ? `${fmtInt(d.jobs.ok + d.jobs.failed)} / ${fmtInt(d.jobs.total)}` : '' }), el('td', { text: d.progress !== undefined ? `${Math.round(d.progress * 100)}%` : '' }), el('td', { text: d.created_at || '' }), el('td', {}, btn));
    }));
  } catch (e) {
    $('h-note').textContent = `Cannot list batches: ${describeError(e)}`;
  }
}
$('h-refresh').addEventListener('click', refreshHistory);

// ------------------------------------------------------------------ start

async function start() {
  showView('run');
  const info = await client.info();
  if (info.auth && !client.token) await askToken();
  else if (client.token) $('forget-token').hidden = false;
  caps = await client.capabilities();
  for (const n of document.querySelectorAll('.async-note')) {
    n.textContent = caps.stored ? '' : 'Needs stored batches (SPEC §8), which this server does not offer.';
  }
  $('num-async').disabled = !caps.stored;
  $('img-async').disabled = !caps.stored;
  $('follow-id').disabled = !caps.stored;
  $('follow-btn').disabled = !caps.stored;
  try {
    catalogue = await withAuth(() => client.ops());
  } catch (e) {
    $('num-error').textContent = `Cannot read the catalogue: ${describeError(e)}`;
    return;
  }
  fillNumOps();
  fillImageForm();
  drawTimeline();
  refreshPool();
  setInterval(() => {
    if (document.visibilityState === 'visible') refreshPool();
  }, 2000);
  document.body.dataset.ready = 'true';
  const following = sessionStorage.getItem(FOLLOW_KEY);
  if (caps.stored && following) followId(following);
}
start();
