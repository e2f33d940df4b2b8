// llama-router's web console: one page, no framework. Models and status come
// live from GET /events (read with fetch so the API key travels in the
// Authorization header, never in a URL); actions call the /models endpoints;
// the playground streams from /v1/completions or /v1/chat/completions.
'use strict';

const KEY_ITEM = 'llama-router-api-key';
const models = new Map(); // id -> model JSON as GET /models shows it
const rows = new Map(); // id -> {tr, cells, buttons}
let detailId = null;
let watching = null; // AbortController of the /events stream
let retryMs = 1000;
let vram = {}; // model id -> VRAM bytes reserved on all GPUs (from the last status)

const $ = (id) => document.getElementById(id);

// ---- formatting ----
function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return (i === 0 ? String(v) : v.toFixed(1)) + ' ' + units[i];
}
function when(ms) {
  if (!ms) return '–';
  const d = new Date(ms);
  return d.toLocaleTimeString();
}
function duration(s) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return (h ? h + ' h ' : '') + (h || m ? m + ' min ' : '') + (s % 60) + ' s';
}
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k.startsWith('data-')) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

// ---- errors and the key ----
function showError(text) {
  $('error-text').textContent = text;
  $('error').hidden = false;
}
$('error-close').addEventListener('click', () => { $('error').hidden = true; });

class Unauthorized extends Error {}

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  const key = sessionStorage.getItem(KEY_ITEM);
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

function askKey(message) {
  if (watching) { watching.abort(); watching = null; }
  sessionStorage.removeItem(KEY_ITEM); // a refused key is no use kept
  $('app').hidden = true;
  $('strip').replaceChildren(); // what a refused key showed is not kept
  models.clear();
  for (const row of rows.values()) row.tr.remove();
  rows.clear();
  $('keyform').hidden = false;
  $('keymsg').textContent = message || 'This server requires an API key.';
  setConn('API key required', 'bad');
  $('key').focus();
}

$('keyform').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const key = $('key').value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  $('key').value = '';
  $('keyform').hidden = true;
  watch();
});

// The server's error message of a failed answer.
async function failure(r) {
  const text = await r.text();
  try {
    const j = JSON.parse(text);
    if (j && j.error) return j.error.message || JSON.stringify(j.error);
  } catch (_) { /* not JSON */ }
  return text || (r.status + ' ' + r.statusText);
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders(body ? { 'Content-Type': 'application/json' } : {}) };
  if (body) init.body = JSON.stringify(body);
  const r = await fetch(path, init);
  if (r.status === 401) {
    const message = await failure(r);
    askKey('The server refused the key: ' + message);
    throw new Unauthorized(message);
  }
  if (!r.ok) throw new Error(await failure(r));
  return r.json();
}

async function act(what, call) {
  try {
    await call();
  } catch (e) {
    if (!(e instanceof Unauthorized)) showError(what + ' failed: ' + e.message);
  }
}

// ---- crash reports ----
async function showCrash(id) {
  const report = await api('GET', '/crashes/' + encodeURIComponent(id));
  $('crash-h').textContent = 'Crash report ' + report.id;
  $('crash-body').textContent = JSON.stringify(report, null, 2);
  $('crash').hidden = false;
  $('crash-close').focus();
}
$('crash-close').addEventListener('click', () => { $('crash').hidden = true; });

// ---- the event stream ----
function setConn(text, kind) {
  const c = $('conn');
  c.textContent = text;
  c.className = 'conn ' + (kind || '');
}

async function watch() {
  if (watching) watching.abort();
  const ctl = new AbortController();
  watching = ctl;
  setConn('connecting…');
  let r;
  try {
    r = await fetch('/events', { headers: authHeaders({ Accept: 'text/event-stream' }), signal: ctl.signal, cache: 'no-store' });
  } catch (e) {
    if (ctl.signal.aborted) return;
    return reconnect(ctl, 'cannot reach the server: ' + e.message);
  }
  if (r.status === 401) {
    askKey(sessionStorage.getItem(KEY_ITEM) ? 'The server refused the key: ' + await failure(r) : undefined);
    return;
  }
  if (!r.ok) return reconnect(ctl, await failure(r));
  $('keyform').hidden = true;
  $('app').hidden = false;
  setConn('live', 'ok');
  retryMs = 1000;
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        dispatch(block);
      }
      if (buf.length > (8 << 20)) break; // a runaway event: start again
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  reconnect(ctl, 'the event stream ended');
}

function reconnect(ctl, why) {
  if (watching !== ctl) return;
  setConn('reconnecting (' + why + ')…', 'bad');
  setTimeout(() => { if (watching === ctl) watch(); }, retryMs);
  retryMs = Math.min(retryMs * 2, 15000);
}

function dispatch(block) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'event') name = value; else if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  let msg;
  try { msg = JSON.parse(data.join('\n')); } catch (_) { return; }
  if (name === 'snapshot') {
    models.clear();
    for (const m of msg.models) models.set(m.id, m);
    renderModels();
  } else if (name === 'model') {
    // null: the model is gone; no "model" at all: the server could not say, keep the row.
    if (msg.model) models.set(msg.id, msg.model); else if (msg.model === null) models.delete(msg.id);
    renderModels();
  } else if (name === 'status') {
    renderStatus(msg);
  } else if (name === 'error') {
    showError('Event stream: ' + msg.message);
  }
}

// ---- the models table ----
const COLUMNS = ['Model', 'State', 'Size', 'Quant', 'Context', 'Worker', 'Resident', 'Last used', 'Pinned', 'Actions'];

function makeRow(id) {
  const cells = COLUMNS.map((label) => el('td', { 'data-label': label }));
  const tr = el('tr', { 'data-model': id }, ...cells);
  const button = (action, text) => {
    const b = el('button', { type: 'button', 'data-action': action, textContent: text });
    b.setAttribute('aria-label', text + ' ' + id);
    b.addEventListener('click', () => onAction(id, action));
    return b;
  };
  const buttons = {
    load: button('load', 'Load'),
    unload: button('unload', 'Unload'),
    pin: button('pin', 'Pin'),
    details: button('details', 'Details'),
  };
  cells[9].append(el('div', { class: 'actions' }, buttons.load, buttons.unload, buttons.pin, buttons.details));
  return { tr, cells, buttons };
}

function renderModels() {
  const body = $('model-rows');
  const ids = [...models.keys()].sort();
  for (const [id, row] of rows) {
    if (!models.has(id)) { row.tr.remove(); rows.delete(id); }
  }
  ids.forEach((id, index) => {
    let row = rows.get(id);
    if (!row) { row = makeRow(id); rows.set(id, row); }
    if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] || null);
    fillRow(row, models.get(id));
  });
  $('empty').hidden = ids.length > 0;
  renderModelChoice(ids);
  if (detailId && models.has(detailId)) renderSettings(models.get(detailId));
}

function fillRow(row, m) {
  const [name, state, size, quant, ctx, worker, resident, used, pinned] = row.cells;
  name.replaceChildren(el('span', { class: 'id', textContent: m.id }));
  if (m.aliases && m.aliases.length) name.append(el('div', { class: 'aliases', textContent: 'aka ' + m.aliases.join(', ') }));
  state.replaceChildren(el('span', { class: 'state state-' + m.state, textContent: m.state }));
  if (m.failure_reason) {
    state.append(el('div', { class: 'reason', textContent: m.failure_reason }));
    const crash = m.failure_reason.match(/crash report ([A-Za-z0-9_-]+)/);
    if (crash) {
      const open = el('button', { type: 'button', class: 'crash-link', textContent: 'Crash report' });
      open.addEventListener('click', () => act('Reading the crash report', () => showCrash(crash[1])));
      state.append(open);
    }
  }
  row.tr.dataset.state = m.state;
  size.textContent = bytes(m.size_bytes);
  quant.textContent = m.quantization || '–';
  ctx.textContent = m.context_length ? String(m.context_length) : '–';
  worker.textContent = m.worker_pid ? 'pid ' + m.worker_pid : '–';
  resident.textContent = bytes(m.resident_bytes) + (vram[m.id] ? ' · VRAM ' + bytes(vram[m.id]) : '');
  used.textContent = when(m.last_used_unix_ms);
  pinned.textContent = m.pinned ? 'yes' : 'no';
  row.buttons.pin.textContent = m.pinned ? 'Unpin' : 'Pin';
  row.buttons.pin.setAttribute('aria-label', (m.pinned ? 'Unpin ' : 'Pin ') + m.id);
}

function onAction(id, action) {
  const m = models.get(id);
  if (action === 'details') return openDetail(id);
  if (action === 'load') return act('Load ' + id, () => api('POST', '/models/load', { model: id }));
  if (action === 'unload') return act('Unload ' + id, () => api('POST', '/models/unload', { model: id }));
  if (action === 'pin') {
    const pinned = !(m && m.pinned);
    return act((pinned ? 'Pin ' : 'Unpin ') + id, () => api('POST', '/models/pin', { model: id, pinned }));
  }
}

// ---- the status strip ----
function bar(used, total) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const outer = el('span', { class: 'bar' });
  outer.append(el('span', { class: 'fill' }));
  outer.firstChild.style.width = pct.toFixed(1) + '%';
  return outer;
}

function item(label, ...value) {
  return el('div', { class: 'item' }, el('span', { class: 'label', textContent: label }), ...value);
}

function renderStatus(s) {
  const reserved = {};
  for (const g of s.gpus || []) {
    for (const [id, n] of Object.entries(g.reserved_by_model || {})) reserved[id] = (reserved[id] || 0) + n;
  }
  if (JSON.stringify(reserved) !== JSON.stringify(vram)) {
    vram = reserved;
    for (const [id, row] of rows) if (models.has(id)) fillRow(row, models.get(id));
  }
  const parts = [
    item('version', s.version),
    item('uptime', duration(s.uptime_seconds)),
    item('models max', s.models_max ? String(s.models_max) : 'no limit'),
    item('host cache', bytes(s.host_cache_bytes_used) + (s.host_cache_bytes_limit ? ' / ' + bytes(s.host_cache_bytes_limit) : ''),
      ...(s.host_cache_bytes_limit ? [bar(s.host_cache_bytes_used, s.host_cache_bytes_limit)] : [])),
    item('requests', s.requests_active + ' active, ' + s.requests_queued + ' queued'),
  ];
  for (const g of s.gpus || []) {
    parts.push(item('GPU ' + g.backend + g.index, g.name + ' ' + bytes(g.used_bytes) + ' / ' + bytes(g.total_bytes), bar(g.used_bytes, g.total_bytes)));
  }
  if (!(s.gpus || []).length) parts.push(item('GPUs', 'none'));
  $('strip').replaceChildren(...parts);
}

// ---- the per-model view ----
function renderSettings(m) {
  $('detail-h').textContent = m.id + ' (' + m.state + ')';
  const shown = Object.assign({
    path: m.path,
    architecture: m.gguf_architecture,
    modalities: m.architecture,
    parameters: m.parameter_count,
  }, m.settings);
  $('detail-settings').textContent = JSON.stringify(shown, null, 2);
}

async function openDetail(id) {
  detailId = id;
  const m = models.get(id);
  if (m) renderSettings(m);
  $('detail').hidden = false;
  await refreshDetail();
  $('detail').scrollIntoView({ block: 'nearest' });
}

async function refreshDetail() {
  const id = detailId;
  if (!id) return;
  const path = '/models/' + encodeURIComponent(id);
  await act('Reading the logs of ' + id, async () => {
    const logs = await api('GET', path + '/logs');
    const text = logs.lines.map((l) => when(l.at_unix_ms) + ' ' + l.level.padEnd(5) + ' ' + l.text).join('\n');
    $('detail-logs').textContent = text || '(no worker log lines yet)';
  });
  await act('Reading the timings of ' + id, async () => {
    const t = await api('GET', path + '/timings');
    drawChart(t.timings);
  });
}

$('detail-close').addEventListener('click', () => { detailId = null; $('detail').hidden = true; });
$('detail-refresh').addEventListener('click', () => refreshDetail());

function drawChart(points) {
  const canvas = $('chart');
  const width = Math.max(200, canvas.clientWidth || 600);
  canvas.width = width;
  const height = canvas.height;
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, width, height);
  g.strokeStyle = '#888';
  g.strokeRect(0.5, 0.5, width - 1, height - 1);
  $('chart-note').textContent = points.length ? points.length + ' generations in the last 30 min' : 'no generations yet';
  // What was drawn, for a test to read back.
  canvas.dataset.points = String(points.length);
  canvas.dataset.maxTtftMs = '0';
  if (!points.length) return;
  const t0 = points[0].at_unix_ms;
  const span = Math.max(1, points[points.length - 1].at_unix_ms - t0);
  const line = (key, color) => {
    const max = Math.max(1, ...points.map((p) => p[key]));
    g.strokeStyle = color;
    g.fillStyle = color;
    g.beginPath();
    points.forEach((p, i) => {
      const x = points.length === 1 ? width / 2 : 6 + ((width - 12) * (p.at_unix_ms - t0)) / span;
      const y = height - 6 - ((height - 24) * p[key]) / max;
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
      g.fillRect(x - 2, y - 2, 4, 4);
    });
    g.stroke();
    return max;
  };
  const maxTtft = line('ttft_ms', '#d9480f');
  const maxTps = line('tokens_per_second', '#1c7ed6');
  canvas.dataset.maxTtftMs = String(Math.max(...points.map((p) => p.ttft_ms)));
  g.fillStyle = '#555';
  g.fillText('max ' + maxTtft.toFixed(0) + ' ms · ' + maxTps.toFixed(1) + ' tok/s', 8, 14);
}

setupPlayground();
watch();
