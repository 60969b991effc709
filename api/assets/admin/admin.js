'use strict';
// The operators' page. Every value from the API is written as text (textContent, or SVG
// attributes set with setAttribute), never as markup; the CSP allows no inline code or style.

const STATES = ['scheduled', 'available', 'running', 'retrying', 'done', 'dead', 'cancelled'];
// The filter's fields, as the API names them, and their inputs.
const INPUTS = {queue: 'f-queue', state: 'f-state', kind: 'f-kind', company_id: 'f-company',
  q: 'f-q', from: 'f-from', to: 'f-to'};
const LABELS = {queue: 'queue', state: 'state', kind: 'kind', company_id: 'company', q: 'text',
  from: 'from', to: 'to'};
const RETRYABLE = ['dead', 'retrying'];
const DISCARDABLE = ['scheduled', 'available', 'retrying', 'dead'];
const PAGE_SIZE = 25;
const REFRESH_MS = 2000;
const TRENDS_EVERY = 5; // refreshes: the charts are redrawn every ~10 s
const SVG = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
const status = $('status');

// What the page shows: the filter as last submitted (and accepted by the API), the cursor of
// the page shown (null: the newest), the cursors of the newer pages, and the older page's.
const view = {filter: {state: 'dead'}, cursor: null, back: [], next: null, generation: 0};
let paused = new Map(); // queue -> {paused_at, paused_by}
let pending = null; // a bulk action counted and waiting for Confirm: {action, filter}
let ticks = 0;

function token() { return sessionStorage.getItem('voxline-token') || ''; }

async function api(method, path, body) {
  const init = {method, headers: {'Authorization': 'Bearer ' + token()}};
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error((answer.error && answer.error.message) || ('HTTP ' + r.status));
    e.field = answer.error && answer.error.field;
    throw e;
  }
  return answer;
}

function fieldError(field, message) { const e = new Error(message); e.field = field; return e; }
function plural(n, one) { return n + ' ' + one + (n === 1 ? '' : 's'); }
function when(iso) { return iso ? new Date(iso).toLocaleString() : '-'; }
function clock(iso) { return new Date(iso).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'}); }
function cell(row, text) { const td = document.createElement('td'); td.textContent = text; row.append(td); return td; }
function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}
function pausedBadge(queue) {
  const p = paused.get(queue);
  if (!p) return null;
  const b = el('span', 'badge paused', 'paused');
  b.title = 'paused since ' + when(p.paused_at) + ' by ' + (p.paused_by || '?');
  return b;
}

// ---- Filter ----

function formFilter() {
  const f = {};
  for (const name of ['queue', 'state', 'kind', 'company_id', 'q']) {
    const v = $(INPUTS[name]).value.trim();
    if (v) f[name] = v;
  }
  // datetime-local holds a local time without a zone; the API takes RFC 3339 (sent in UTC).
  for (const name of ['from', 'to']) {
    const input = $(INPUTS[name]);
    if (input.validity && input.validity.badInput) throw fieldError(name, 'incomplete date and time');
    if (!input.value) continue;
    const d = new Date(input.value);
    if (isNaN(d.getTime())) throw fieldError(name, 'not a date and time');
    f[name] = d.toISOString();
  }
  return f;
}

function describe(f) {
  const parts = [];
  for (const name of ['queue', 'state', 'kind', 'company_id', 'q']) {
    if (f[name]) parts.push(LABELS[name] + ' ' + (name === 'q' ? '"' + f[name] + '"' : f[name]));
  }
  if (f.from) parts.push('from ' + when(f.from));
  if (f.to) parts.push('to ' + when(f.to));
  return parts.length ? parts.join(', ') : 'every job';
}

function jobsPath(f, cursor) {
  const params = new URLSearchParams(f);
  params.set('limit', String(PAGE_SIZE));
  if (cursor != null) params.set('cursor', String(cursor));
  return '/api/admin/jobs?' + params;
}

function clearErrors() {
  for (const slot of document.querySelectorAll('.field-error')) slot.textContent = '';
  for (const id of Object.values(INPUTS)) $(id).removeAttribute('aria-invalid');
  $('filter-error').textContent = '';
}

// An error naming a filter field is shown beside that field; any other under the form (or in
// `elsewhere`).
function showError(err, prefix, elsewhere) {
  const field = err.field && String(err.field).replace(/^filter\./, '');
  const slot = field && INPUTS[field] && $('err-' + field);
  if (slot) {
    slot.textContent = err.message;
    $(INPUTS[field]).setAttribute('aria-invalid', 'true');
    $('filter-error').textContent = prefix ? prefix + 'see ' + LABELS[field] + '.' : '';
  } else {
    (elsewhere || $('filter-error')).textContent = (prefix || '') + err.message;
  }
}

// Shows a page of `f`; the view changes only when the API accepts it.
async function go(f, cursor, back) {
  const body = await api('GET', jobsPath(f, cursor));
  view.filter = f; view.cursor = cursor; view.back = back; view.generation++;
  renderJobs(body, true);
}

$('filter').onsubmit = async (e) => {
  e.preventDefault();
  clearErrors(); cancelBulk(); $('bulk-result').textContent = '';
  try { await go(formFilter(), null, []); } catch (err) { showError(err, 'Filter not applied: '); }
};
$('clear').onclick = () => { $('filter').reset(); $('filter').requestSubmit(); };
$('older').onclick = async () => {
  if (view.next == null) return;
  try { await go(view.filter, view.next, [...view.back, view.cursor]); } catch (err) { showError(err); }
};
$('newer').onclick = async () => {
  if (!view.back.length) return;
  try { await go(view.filter, view.back[view.back.length - 1], view.back.slice(0, -1)); } catch (err) { showError(err); }
};

// ---- Jobs ----

function renderJobs(body, fresh) {
  // Rows are kept per job id and only their text is updated, so a button the operator is
  // about to click is never swapped for a new one by the refresh.
  const tbody = $('jobs').tBodies[0];
  if (fresh) tbody.replaceChildren();
  const rows = new Map([...tbody.rows].map((tr) => [tr.dataset.job, tr]));
  for (const job of body.jobs) {
    let tr = rows.get(String(job.id)); rows.delete(String(job.id));
    if (!tr) tr = jobRow(job);
    updateJobRow(tr, job);
    tbody.append(tr);
  }
  for (const gone of rows.values()) gone.remove();
  view.next = body.next_cursor == null ? null : body.next_cursor;
  $('older').disabled = view.next == null;
  $('newer').disabled = view.back.length === 0;
  $('page').textContent = 'page ' + (view.back.length + 1);
  $('jobs-empty').hidden = body.jobs.length > 0;
  $('applied').textContent = 'Showing ' + describe(view.filter) + '.';
}

function jobRow(job) {
  const tr = document.createElement('tr'); tr.dataset.job = job.id;
  const a = el('a', '', String(job.id)); a.href = '#job-' + job.id;
  a.onclick = (e) => { e.preventDefault(); show(job.id); };
  cell(tr, '').append(a);
  cell(tr, ''); cell(tr, job.kind); cell(tr, ''); cell(tr, job.company_id || '');
  cell(tr, '').className = 'num'; cell(tr, '').className = 'time'; cell(tr, '').className = 'err';
  const actions = cell(tr, ''); actions.className = 'actions';
  for (const [label, action] of [['Retry', 'retry'], ['Discard', 'discard']]) {
    const b = el('button', '', label); b.type = 'button'; b.dataset.action = action;
    b.onclick = () => act(job.id, action); actions.append(b);
  }
  return tr;
}

function updateJobRow(tr, job) {
  const c = tr.cells;
  c[1].replaceChildren(job.queue);
  const badge = pausedBadge(job.queue);
  if (badge) c[1].append(' ', badge);
  c[3].replaceChildren(el('span', 'state ' + job.state, job.state));
  tr.dataset.state = job.state;
  c[5].textContent = job.attempt + '/' + job.max_attempts;
  c[6].textContent = when(job.run_at);
  c[7].textContent = job.last_error || '';
  tr.querySelector('button[data-action="retry"]').hidden = !RETRYABLE.includes(job.state);
  tr.querySelector('button[data-action="discard"]').hidden = !DISCARDABLE.includes(job.state);
}

async function show(id) {
  for (const tr of $('jobs').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.job === String(id));
  try { $('detail').textContent = JSON.stringify(await api('GET', '/api/admin/jobs/' + id), null, 2); }
  catch (e) { status.textContent = 'Error: ' + e.message; }
}

async function act(id, action) {
  try { await api('POST', '/api/admin/jobs/' + id + '/' + action); status.textContent = 'Job ' + id + ': ' + action + ' done'; }
  catch (e) { status.textContent = 'Error: ' + e.message; }
  refresh(); show(id);
}

// ---- Bulk actions on the filtered set ----

const VERB = {retry: ['Retry', 'Retried', 'only dead or retrying jobs are retried'],
  discard: ['Discard', 'Discarded', 'only waiting or dead jobs are discarded']};

function cancelBulk() { pending = null; $('confirm').hidden = true; $('confirm').removeAttribute('data-action'); }

async function askBulk(action) {
  cancelBulk(); $('bulk-result').textContent = '';
  const filter = {...view.filter};
  try {
    const r = await api('POST', '/api/admin/jobs/bulk', {action, filter, dry_run: true});
    if (r.count === 0) {
      $('bulk-result').textContent = 'No job matching ' + describe(filter) + ' can be ' +
        (action === 'retry' ? 'retried' : 'discarded') + ' (' + VERB[action][2] + ').';
      return;
    }
    pending = {action, filter};
    const text = $('confirm-text');
    text.replaceChildren(el('strong', '', VERB[action][0] + ' ' + plural(r.count, 'job') + '?'),
      ' ', el('span', 'muted', 'Matching ' + describe(filter) + '; ' + VERB[action][2] + '.'));
    $('confirm').dataset.action = action;
    $('confirm').dataset.count = String(r.count);
    $('confirm').hidden = false;
    $('confirm-yes').focus();
  } catch (err) { showError(err, '', $('bulk-result')); }
}

async function confirmBulk() {
  const p = pending;
  if (!p) return;
  cancelBulk();
  try {
    const r = await api('POST', '/api/admin/jobs/bulk', {action: p.action, filter: p.filter, dry_run: false});
    $('bulk-result').textContent = VERB[p.action][1] + ' ' + plural(r.count, 'job') + '.';
  } catch (err) { showError(err, '', $('bulk-result')); }
  refresh(true);
}

$('bulk-retry').onclick = () => askBulk('retry');
$('bulk-discard').onclick = () => askBulk('discard');
$('confirm-yes').onclick = confirmBulk;
$('confirm-no').onclick = () => { cancelBulk(); $('bulk-result').textContent = 'Cancelled; nothing changed.'; };

// ---- Queues ----

function renderQueues(queues) {
  paused = new Map(queues.filter((q) => q.paused).map((q) => [q.queue, q]));
  const tbody = $('queues').tBodies[0];
  const rows = new Map([...tbody.rows].map((tr) => [tr.dataset.queue, tr]));
  for (const q of queues) {
    let tr = rows.get(q.queue); rows.delete(q.queue);
    if (!tr) tr = queueRow(q.queue);
    const c = tr.cells;
    tr.dataset.paused = String(q.paused);
    tr.classList.toggle('paused', q.paused);
    if (q.paused) {
      c[1].replaceChildren(el('span', 'badge paused', 'paused'),
        ' since ' + when(q.paused_at) + ' by ' + (q.paused_by || '?'));
    } else {
      c[1].replaceChildren(el('span', 'badge running', 'running'));
    }
    STATES.forEach((s, i) => { c[2 + i].textContent = String(q.counts[s] || 0); });
    c[9].textContent = q.oldest_available_age_ms == null ? '-' : (q.oldest_available_age_ms / 1000).toFixed(1) + ' s';
    c[10].textContent = String(q.done_last_5m); c[11].textContent = String(q.failed_last_5m);
    const b = c[12].firstChild;
    b.textContent = q.paused ? 'Resume' : 'Pause';
    b.dataset.action = q.paused ? 'resume' : 'pause';
    tbody.append(tr);
  }
  for (const gone of rows.values()) gone.remove();

  // The filter's queue choices, marked when paused; the choice made is kept.
  const select = $('f-queue');
  const chosen = select.value;
  const options = new Map([...select.options].slice(1).map((o) => [o.value, o]));
  for (const q of queues) {
    let o = options.get(q.queue); options.delete(q.queue);
    if (!o) { o = document.createElement('option'); o.value = q.queue; }
    o.textContent = q.queue + (q.paused ? ' (paused)' : '');
    select.append(o);
  }
  for (const [value, o] of options) if (value !== chosen) o.remove();
  select.value = chosen;
}

function queueRow(queue) {
  const tr = document.createElement('tr'); tr.dataset.queue = queue;
  cell(tr, queue).className = 'name'; cell(tr, '').className = 'status';
  for (let i = 0; i < STATES.length + 3; i++) cell(tr, '').className = 'num';
  const b = el('button', 'pause'); b.type = 'button';
  b.onclick = () => pauseOrResume(queue, b);
  cell(tr, '').append(b);
  return tr;
}

async function pauseOrResume(queue, button) {
  const action = button.dataset.action;
  button.disabled = true;
  try {
    const r = await api('POST', '/api/admin/queues/' + encodeURIComponent(queue) + '/' + action, {});
    status.textContent = 'Queue ' + queue + (r.paused ? ' paused' : ' resumed');
  } catch (e) { status.textContent = 'Error: ' + e.message; }
  button.disabled = false;
  refresh(true);
}

// ---- Trends: small SVG charts of the per-minute activity ----

const W = 360, H = 130, LEFT = 30, RIGHT = 8, TOP = 8, BOTTOM = 20;
const KINDS = ['done', 'failed', 'dead', 'enqueued'];

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}
function active(points) { return points.some((p) => KINDS.some((k) => p[k] > 0)); }

function renderTrends(body) {
  const box = $('trends');
  const busy = body.queues.filter((q) => active(q.points));
  if (!busy.length) {
    box.replaceChildren(el('p', 'muted', 'No activity in the last ' + body.minutes + ' minutes.'));
    return;
  }
  const charts = [];
  if (busy.length > 1) {
    const total = busy[0].points.map((p, i) => {
      const sum = {minute: p.minute};
      for (const k of KINDS) sum[k] = busy.reduce((n, q) => n + (q.points[i] ? q.points[i][k] : 0), 0);
      return sum;
    });
    charts.push(chart('all queues', null, total));
  }
  for (const q of busy) charts.push(chart(q.queue, q.queue, q.points));
  box.replaceChildren(...charts);
}

function chart(title, queue, points) {
  const fig = el('figure', 'chart'); fig.dataset.chart = title;
  const cap = el('figcaption', '', title);
  const badge = queue && pausedBadge(queue);
  if (badge) cap.append(' ', badge);
  const sums = {};
  for (const k of KINDS) sums[k] = points.reduce((n, p) => n + p[k], 0);
  cap.append(' ', el('span', 'muted', KINDS.map((k) => sums[k] + ' ' + k).join(' · ')));
  fig.append(cap);

  const s = svg('svg', {viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img',
    'aria-label': title + ': ' + KINDS.map((k) => sums[k] + ' ' + k).join(', ') + ' in ' + points.length + ' minutes'});
  const plotW = W - LEFT - RIGHT, plotH = H - TOP - BOTTOM;
  const max = Math.max(1, ...points.map((p) => Math.max(p.done + p.failed + p.dead, p.enqueued)));
  const y = (v) => TOP + plotH - (v / max) * plotH;
  const step = plotW / points.length;
  const barW = Math.max(1, step * 0.6);
  const inset = (step - barW) / 2;

  // Axes and their labels.
  s.append(svg('line', {x1: LEFT, y1: y(0), x2: W - RIGHT, y2: y(0), class: 'axis'}));
  s.append(svg('line', {x1: LEFT, y1: y(max), x2: W - RIGHT, y2: y(max), class: 'grid'}));
  s.append(svg('text', {x: LEFT - 4, y: y(max) + 4, class: 'label', 'text-anchor': 'end'}, String(max)));
  s.append(svg('text', {x: LEFT - 4, y: y(0) + 3, class: 'label', 'text-anchor': 'end'}, '0'));
  const last = points.length - 1;
  s.append(svg('text', {x: LEFT, y: H - 5, class: 'label', 'text-anchor': 'start'}, clock(points[0].minute)));
  s.append(svg('text', {x: LEFT + plotW / 2, y: H - 5, class: 'label', 'text-anchor': 'middle'},
    clock(points[Math.floor(last / 2)].minute)));
  s.append(svg('text', {x: W - RIGHT, y: H - 5, class: 'label', 'text-anchor': 'end'}, 'now'));

  // Per minute: what was enqueued as a light column behind, and in front of it what the
  // attempts ended as (done, failed, dead), stacked.
  points.forEach((p, i) => {
    const x = LEFT + i * step;
    if (p.enqueued > 0) {
      const height = Math.max(1.5, y(0) - y(p.enqueued));
      s.append(svg('rect', {x: (x + 0.25).toFixed(2), y: (y(0) - height).toFixed(2),
        width: Math.max(1, step - 0.5).toFixed(2), height: height.toFixed(2), class: 'mark enqueued'}));
    }
    let base = 0;
    for (const k of ['done', 'failed', 'dead']) {
      if (!p[k]) continue;
      const height = Math.max(1.5, y(base) - y(base + p[k]));
      s.append(svg('rect', {x: (x + inset).toFixed(2), y: (y(base) - height).toFixed(2),
        width: barW.toFixed(2), height: height.toFixed(2), class: 'mark ' + k}));
      base += p[k];
    }
  });
  // One invisible column per minute that names its counts on hover.
  points.forEach((p, i) => {
    const hit = svg('rect', {x: (LEFT + i * step).toFixed(2), y: TOP, width: step.toFixed(2), height: plotH, class: 'hit'});
    hit.append(svg('title', {}, clock(p.minute) + ': ' + KINDS.map((k) => p[k] + ' ' + k).join(', ')));
    s.append(hit);
  });
  fig.append(s);
  return fig;
}

// ---- Refresh ----

async function refresh(trends) {
  if (!token()) return;
  const generation = view.generation;
  try {
    renderQueues((await api('GET', '/api/admin/queues')).queues);
    const jobs = await api('GET', jobsPath(view.filter, view.cursor));
    // A page asked for before the filter or page changed is not shown over the new one.
    if (generation === view.generation) renderJobs(jobs, false);
    if (trends || ticks % TRENDS_EVERY === 0) renderTrends(await api('GET', '/api/admin/stats?minutes=60'));
    ticks++;
    $('main').hidden = false;
    status.textContent = 'Updated ' + new Date().toLocaleTimeString();
  } catch (e) { status.textContent = 'Error: ' + e.message; }
}

document.getElementById('login').onsubmit = (e) => {
  e.preventDefault();
  const input = document.getElementById('token');
  sessionStorage.setItem('voxline-token', input.value.trim());
  input.value = '';
  refresh(true);
};
refresh(true); setInterval(refresh, REFRESH_MS);
