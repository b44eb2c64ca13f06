// harbormaster dashboard: /v1/status (apps, instances), /metrics (traffic,
// parsed here), /v1/events (SSE: refresh the moment something changes).
'use strict';

const $ = (sel, el = document) => el.querySelector(sel);
const model = {
  health: null,
  phase: null,
  samples: [], // [{t, apps}] from /metrics, last ~15 s
  traffic: {}, // app -> {rps, errors, p95, restarts}
  history: {}, // instance -> recent states, oldest first
  cards: new Map(),
};
const WINDOW_MS = 15000;
const KINDS = ['state_change', 'readiness', 'breaker', 'waiting', 'drain', 'reload', 'restart', 'shutdown', 'lagged'];

// ---------- data ----------

async function refreshStatus() {
  try {
    const res = await fetch('/v1/status', { cache: 'no-store' });
    model.health = await res.json();
    for (const [, app] of Object.entries(model.health.apps)) {
      for (const i of app.instances) remember(i.id, i.state);
    }
    render();
  } catch (e) {
    setLive(false);
  }
}

// At most one refresh per 100 ms however many events arrive.
let statusTimer = null;
function refreshSoon() {
  if (statusTimer) return;
  statusTimer = setTimeout(() => { statusTimer = null; refreshStatus(); }, 100);
}

function parseMetrics(text) {
  const out = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const l of text.split('\n')) {
    if (!l || l[0] === '#') continue;
    const m = line.exec(l);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || '').matchAll(label)) labels[k] = v.replace(/\\(.)/g, '$1');
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function summarize(samples) {
  const apps = {};
  const app = (n) => (apps[n] ??= { total: 0, errors: 0, buckets: new Map(), restarts: 0 });
  for (const s of samples) {
    const a = s.labels.app;
    if (a === undefined || a === '') continue;
    if (s.name === 'harbormaster_http_requests_total') {
      app(a).total += s.value;
      if (Number(s.labels.code) >= 500) app(a).errors += s.value;
    } else if (s.name === 'harbormaster_http_request_duration_seconds_bucket') {
      app(a).buckets.set(s.labels.le, s.value);
    } else if (s.name === 'harbormaster_instance_restarts_total') {
      app(a).restarts = s.value;
    }
  }
  return apps;
}

// The 95th percentile from histogram bucket deltas, interpolated inside
// the bucket (as Prometheus' histogram_quantile does).
function p95(now, then) {
  const les = [...now.buckets.keys()].sort((x, y) => Number(x) - Number(y));
  const delta = (le) => (now.buckets.get(le) || 0) - ((then && then.buckets.get(le)) || 0);
  const total = delta('+Inf');
  if (!(total > 0)) return null;
  const rank = 0.95 * total;
  let lower = 0, below = 0;
  for (const le of les) {
    const count = delta(le);
    if (count >= rank) {
      if (le === '+Inf') return lower;
      const upper = Number(le);
      const inBucket = count - below;
      return inBucket > 0 ? lower + (upper - lower) * ((rank - below) / inBucket) : upper;
    }
    lower = Number(le);
    below = count;
  }
  return null;
}

async function refreshMetrics() {
  try {
    const res = await fetch('/metrics', { cache: 'no-store' });
    const apps = summarize(parseMetrics(await res.text()));
    const t = performance.now();
    model.samples.push({ t, apps });
    while (model.samples.length > 2 && t - model.samples[0].t > WINDOW_MS) model.samples.shift();
    const first = model.samples[0];
    const secs = (t - first.t) / 1000;
    for (const [name, now] of Object.entries(apps)) {
      const then = first === model.samples[model.samples.length - 1] ? null : first.apps[name];
      const requests = now.total - ((then && then.total) || 0);
      const errors = now.errors - ((then && then.errors) || 0);
      model.traffic[name] = {
        rps: then && secs > 0 ? requests / secs : null,
        errors: requests > 0 ? errors / requests : null,
        p95: p95(now, then),
        restarts: now.restarts,
      };
    }
    render();
  } catch (e) {
    setLive(false);
  }
}

function remember(id, state) {
  const h = (model.history[id] ??= []);
  if (h[h.length - 1] !== state) h.push(state);
  if (h.length > 12) h.shift();
}

// ---------- live events ----------

function connect() {
  const es = new EventSource('/v1/events');
  es.onopen = () => { setLive(true); refreshStatus(); };
  es.onerror = () => setLive(false);
  for (const kind of KINDS) {
    es.addEventListener(kind, (e) => {
      let data = {};
      try { data = JSON.parse(e.data); } catch (_) { /* lagged: a number */ }
      onEvent(kind, data);
    });
  }
}

function findInstance(id) {
  if (!model.health) return null;
  for (const app of Object.values(model.health.apps)) {
    const i = app.instances.find((x) => x.id === id);
    if (i) return i;
  }
  return null;
}

function onEvent(kind, e) {
  if (kind === 'state_change' && e.instance) {
    remember(e.instance, e.to);
    const i = findInstance(e.instance);
    if (i) { i.state = e.to; i.ready = e.to === 'ready'; }
  } else if (kind === 'breaker' && e.instance) {
    const i = findInstance(e.instance);
    if (i) i.breaker = e.to;
  } else if (kind === 'drain' && e.app && model.health && model.health.apps[e.app]) {
    model.health.apps[e.app].draining = e.draining;
  } else if (kind === 'shutdown') {
    model.phase = e.phase;
  }
  addEvent(kind, e);
  render();
  refreshSoon();
}

function describe(kind, e) {
  const who = e.instance || e.app || '';
  switch (kind) {
    case 'state_change': return [who, `${e.from} → ${e.to}`, e.reason];
    case 'readiness': return [who, e.ready ? 'ready' : 'not ready'];
    case 'breaker': return [who, `breaker ${e.from} → ${e.to}`];
    case 'waiting': return [who, e.reason ? `waiting: ${e.reason}` : 'no longer waiting'];
    case 'drain': return [who, e.draining ? 'draining' : 'resumed'];
    case 'reload': return ['config', e.ok ? 'reloaded' : 'reload failed', e.message];
    case 'restart': return [who, `restart ${e.outcome}`, e.error];
    case 'shutdown': return ['harbormaster', `shutdown phase: ${e.phase}`];
    default: return ['', 'events were missed; refreshed'];
  }
}

function addEvent(kind, e) {
  const [who, what, detail] = describe(kind, e);
  const li = document.createElement('li');
  li.dataset.kind = kind;
  const time = document.createElement('time');
  time.textContent = (e.ts || new Date().toISOString()).slice(11, 19);
  const body = document.createElement('div');
  body.className = 'what';
  const b = document.createElement('b');
  b.textContent = who;
  body.append(b, ` ${what}`);
  if (detail) {
    const d = document.createElement('div');
    d.className = 'muted';
    d.textContent = detail;
    body.append(d);
  }
  li.append(time, body);
  const list = $('#events');
  list.prepend(li);
  while (list.children.length > 80) list.lastChild.remove();
}

// ---------- actions ----------

async function act(path, what, payload) {
  try {
    const headers = { 'X-Harbormaster': '1' };
    if (payload !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method: 'POST', headers, credentials: 'same-origin',
      body: payload === undefined ? undefined : JSON.stringify(payload),
    });
    if (res.status === 401 || res.status === 403) {
      $('#login-hint').hidden = false;
      toast(`${what}: not logged in`, true);
      return;
    }
    let body = {};
    try { body = await res.json(); } catch (_) { /* empty */ }
    const ok = res.status < 300;
    toast(`${what}: ${ok ? (body.status || 'ok') : (body.error || (body.errors || []).join('; ') || res.status)}`, !ok);
  } catch (e) {
    toast(`${what}: ${e}`, true);
  }
  refreshSoon();
  refreshMcp();
}

// ---------- MCP: servers and kill switches ----------

const killSwitch = (target, engage) =>
  act(`/v1/mcp/${engage ? 'kill' : 'unkill'}`, `${engage ? 'kill' : 'unkill'} ${target}`, { target });

async function refreshMcp() {
  let m;
  try {
    const res = await fetch('/v1/mcp', { cache: 'no-store' });
    if (!res.ok) { $('#mcp').hidden = true; return; }
    m = await res.json();
  } catch (_) { return; }
  const sec = $('#mcp');
  sec.hidden = false;
  const engaged = m.kill_switches || [];
  const all = engaged.includes('*');
  pill($('#mcp-switches'), engaged.length ? `killed: ${engaged.join(', ')}` : 'no kill switch', engaged.length ? 'bad' : 'good');
  $('.kill-all', sec).hidden = all;
  $('.unkill-all', sec).hidden = !all;
  const body = $('#mcp-servers');
  body.replaceChildren();
  for (const s of m.servers || []) {
    const tr = document.createElement('tr');
    tr.dataset.server = s.name;
    cell(tr, s.name, 'id');
    const st = document.createElement('span');
    pill(st, s.state);
    cell(tr, st, 'state');
    const br = document.createElement('span');
    pill(br, s.breaker);
    cell(tr, br, 'breaker');
    cell(tr, s.tools, 'tools');
    cell(tr, s.in_flight, 'inflight');
    const killed = engaged.includes(s.name);
    const b = document.createElement('button');
    b.type = 'button';
    b.className = killed ? 'btn unkill' : 'btn kill';
    b.textContent = killed ? 'Unkill' : 'Kill';
    b.onclick = () => killSwitch(s.name, !killed);
    cell(tr, b, 'switch');
    body.append(tr);
  }
}

let toastTimer = null;
function toast(text, bad) {
  const t = $('#toast');
  t.textContent = text;
  t.className = bad ? 'toast bad' : 'toast';
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
}

async function refreshLogs(app, pre) {
  try {
    const res = await fetch(`/v1/apps/${encodeURIComponent(app)}/logs?lines=200`, {
      headers: { 'X-Harbormaster': '1' }, credentials: 'same-origin', cache: 'no-store',
    });
    if (res.status === 401 || res.status === 403) {
      pre.textContent = 'Log in to see output: run `harbormaster dashboard`.';
      return;
    }
    const body = await res.json();
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = body.lines.length ? body.lines.join('\n') : '(no output yet)';
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  } catch (e) {
    pre.textContent = String(e);
  }
}

// ---------- rendering ----------

function setLive(on) {
  const el = $('#live');
  el.className = on ? 'live on' : 'live off';
  $('span', el).textContent = on ? 'live' : 'reconnecting';
}

function tone(state) {
  if (['ready', 'closed', 'ok', 'running'].includes(state)) return 'good';
  if (['starting', 'restarting', 'half_open', 'stopping', 'waiting', 'degraded', 'draining', 'stopping_apps', 'flushing'].includes(state)) return 'warn';
  if (['failed', 'open', 'exited', 'not_ready', 'shutting_down', 'stopped'].includes(state)) return 'bad';
  return '';
}

function pill(el, text, t) {
  el.textContent = text;
  el.className = `pill ${t ?? tone(text)} ${el.dataset.role || ''}`.trim();
}

function duration(s) {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function latency(secs) {
  if (secs == null) return '–';
  if (secs < 0.001) return `${Math.round(secs * 1e6)} µs`;
  if (secs < 1) return `${(secs * 1000).toFixed(secs < 0.01 ? 2 : 0)} ms`;
  return `${secs.toFixed(2)} s`;
}

function card(name) {
  let c = model.cards.get(name);
  if (c) return c;
  c = $('#app-card').content.firstElementChild.cloneNode(true);
  c.dataset.app = name;
  $('.name', c).textContent = name;
  for (const role of ['kind', 'ready']) $(`.${role}`, c).dataset.role = role;
  $('.drain', c).onclick = () => act(`/v1/apps/${encodeURIComponent(name)}/drain`, `drain ${name}`);
  $('.resume', c).onclick = () => act(`/v1/apps/${encodeURIComponent(name)}/resume`, `resume ${name}`);
  $('.restart', c).onclick = () => act(`/v1/apps/${encodeURIComponent(name)}/restart`, `restart ${name}`);
  const details = $('.logs', c);
  const pre = $('.log-lines', c);
  let timer = null;
  details.addEventListener('toggle', () => {
    clearInterval(timer);
    if (details.open) {
      refreshLogs(name, pre);
      timer = setInterval(() => refreshLogs(name, pre), 3000);
    }
  });
  model.cards.set(name, c);
  $('#apps').append(c);
  return c;
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  if (cls) td.className = cls;
  if (text instanceof Node) td.append(text); else td.textContent = text;
  tr.append(td);
  return td;
}

function render() {
  const h = model.health;
  if (!h) return;
  $('#version').textContent = `v${h.version} · pid ${h.pid}`;
  pill($('#overall'), h.status);
  const phase = model.phase || (h.status === 'shutting_down' ? 'draining' : 'running');
  pill($('#phase'), `phase: ${phase}`, tone(phase));
  $('#phase').dataset.phase = phase;
  $('#uptime').textContent = `up ${duration(h.uptime_s)}`;
  const names = Object.keys(h.apps);
  if (!names.length) $('#apps').innerHTML = '<p class="empty">No apps configured.</p>';
  for (const name of names) {
    const app = h.apps[name];
    const c = card(name);
    pill($('.kind', c), app.kind, '');
    pill($('.ready', c), app.ready ? 'ready' : 'not ready', app.ready ? 'good' : 'bad');
    $('.draining', c).hidden = !app.draining;
    $('.draining', c).className = 'pill warn draining';
    $('.restarting', c).hidden = !app.restarting;
    $('.restarting', c).className = 'pill info restarting';
    $('.drain', c).hidden = app.draining;
    $('.resume', c).hidden = !app.draining;
    $('.restart', c).disabled = app.kind !== 'managed' || app.restarting;
    const note = app.waiting || (app.restart_error && `last restart failed: ${app.restart_error}`);
    $('.note', c).hidden = !note;
    $('.note', c).textContent = note || '';
    const t = model.traffic[name] || {};
    $('.rps', c).textContent = t.rps == null ? '–' : t.rps < 10 ? t.rps.toFixed(1) : Math.round(t.rps).toLocaleString();
    $('.errors', c).textContent = t.errors == null ? '–' : `${(t.errors * 100).toFixed(t.errors && t.errors < 0.1 ? 1 : 0)}%`;
    $('.p95', c).textContent = latency(t.p95);
    $('.inflight', c).textContent = app.in_flight;
    $('.restarts', c).textContent = t.restarts ?? app.instances.reduce((n, i) => n + i.restarts, 0);
    const body = $('tbody', c);
    body.replaceChildren();
    for (const i of app.instances) {
      const tr = document.createElement('tr');
      tr.dataset.instance = i.id;
      tr.dataset.states = (model.history[i.id] || [i.state]).join(' ');
      cell(tr, i.id, 'id');
      const st = document.createElement('span');
      pill(st, i.state);
      cell(tr, st, 'state');
      cell(tr, i.ready ? 'yes' : 'no', 'ready');
      const br = document.createElement('span');
      pill(br, i.breaker);
      cell(tr, br, 'breaker');
      cell(tr, i.in_flight, 'inflight');
      cell(tr, i.restarts, 'restarts');
      cell(tr, i.pid ?? '–', 'pid');
      const d = i.last_death;
      const why = d && (d.exit && !d.reason.includes(d.exit) ? `${d.exit}: ${d.reason}` : d.reason);
      cell(tr, d ? `${d.at.slice(11, 19)} ${why}` : '–', 'death');
      body.append(tr);
    }
    if (!app.instances.length) {
      const tr = document.createElement('tr');
      cell(tr, app.waiting ? 'waiting for dependencies' : 'no instances', 'muted').colSpan = 8;
      body.append(tr);
    }
  }
  for (const [name, c] of model.cards) {
    if (!(name in h.apps)) { c.remove(); model.cards.delete(name); }
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('#reload').onclick = () => act('/v1/reload', 'reload');
  $('#mcp .kill-all').onclick = () => killSwitch('*', true);
  $('#mcp .unkill-all').onclick = () => killSwitch('*', false);
  connect();
  refreshStatus();
  refreshMcp();
  setInterval(refreshMcp, 5000);
  refreshMetrics();
  setInterval(refreshMetrics, 2000);
  setInterval(refreshStatus, 5000);
});
