// The coached person's page. Plain DOM, no libraries: every value from the API is written with
// textContent (or as a text node), never as markup. The member token stays in this tab's
// sessionStorage and goes out as `Authorization: Bearer` on every call.
'use strict';

const TOKEN_KEY = 'voxline-member-token';
const FINAL = ['ready', 'failed'];
const STEPS = ['queued', 'transcribing', 'analyzing', 'ready'];
const SVG = 'http://www.w3.org/2000/svg';
const PAGE = 10;
const $ = (id) => document.getElementById(id);
const status = $('status');

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
function auth() { return {'Authorization': 'Bearer ' + token()}; }

/** An API refusal: its `field` (when it names one) and message. */
class ApiFailure extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || ('HTTP ' + status));
    this.status = status; this.field = error.field || null; this.code = error.code || null;
  }
}

async function api(method, path, body) {
  const r = await fetch(path, {method, headers: auth(), body});
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiFailure(r.status, answer);
  return answer;
}

function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

function cell(row, text, className) { const td = el('td', text, className); row.append(td); return td; }

// ---------------------------------------------------------------- sign in, past sessions

let cursor = null;

async function signIn() {
  if (!token()) return;
  try {
    await loadSessions(true);
    $('main').hidden = false; $('logout').hidden = false; $('signin').hidden = true;
    status.textContent = 'Signed in.';
  } catch (e) {
    status.textContent = 'Sign-in failed: ' + e.message;
    if (e.status === 401) sessionStorage.removeItem(TOKEN_KEY);
  }
}

async function loadSessions(first) {
  if (first) cursor = null;
  // The person's own history, not their colleagues'.
  const query = new URLSearchParams({limit: String(PAGE), mine: 'true'});
  if (cursor) query.set('cursor', cursor);
  const page = await api('GET', '/api/sessions?' + query);
  const body = document.querySelector('#sessions tbody');
  if (first) body.replaceChildren();
  for (const s of page.sessions) body.append(sessionRow(s));
  cursor = page.next_cursor || null;
  $('more').hidden = !cursor;
}

function sessionRow(s) {
  const tr = el('tr'); tr.dataset.session = s.id;
  const link = el('a', s.title || s.id); link.href = '#';
  link.onclick = (e) => { e.preventDefault(); showSession(s.id, s.title); };
  cell(tr, '').append(link);
  cell(tr, s.kind); cell(tr, s.status, 'state'); cell(tr, when(s.created_at));
  return tr;
}

function when(text) {
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? String(text || '') : d.toLocaleString();
}

function rowStatus(id, state) {
  for (const tr of document.querySelectorAll('#sessions tbody tr')) {
    if (tr.dataset.session === id) tr.querySelector('.state').textContent = state;
  }
}

// ---------------------------------------------------------------- record or pick, submit

let recorder = null;
let recorded = null;
let ticking = null;

async function toggleRecording() {
  const button = $('record');
  if (recorder) { recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    $('recorded').textContent = 'Recording needs a browser with MediaRecorder, on https or localhost.';
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const type = 'audio/webm;codecs=opus';
    const options = MediaRecorder.isTypeSupported(type) ? {mimeType: type} : {};
    const chunks = [];
    recorder = new MediaRecorder(stream, options);
    recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
    recorder.onstop = () => {
      clearInterval(ticking);
      stream.getTracks().forEach((t) => t.stop());
      const mime = (recorder.mimeType || 'audio/webm').split(';')[0];
      const extension = mime.split('/')[1] || 'webm';
      recorded = new File(chunks, 'recording.' + extension, {type: mime});
      recorder = null; button.textContent = 'Record again';
      $('file').value = '';
      $('recorded').textContent = 'Recorded ' + Math.round(recorded.size / 1024) + ' KB.';
      $('recorded').dataset.state = 'recorded';
    };
    recorder.start();
    button.textContent = 'Stop';
    const began = Date.now();
    const tick = () => {
      const seconds = Math.floor((Date.now() - began) / 1000);
      $('recorded').textContent = 'Recording… ' + clock(seconds);
      $('recorded').dataset.state = 'recording'; $('recorded').dataset.seconds = String(seconds);
    };
    tick(); ticking = setInterval(tick, 250);
  } catch (e) {
    recorder = null;
    $('recorded').textContent = 'The microphone could not be used: ' + e.message;
  }
}

async function submit(e) {
  e.preventDefault();
  const error = $('form-error'); error.hidden = true;
  const picked = $('file').files[0];
  const audio = picked || recorded;
  if (!audio) { showFormError('audio', 'record something or pick a file first'); return; }
  const form = new FormData();
  form.append('title', $('title').value);
  form.append('kind', $('kind').value);
  const speakers = $('speakers').value;
  if (speakers) {
    const [name, value] = speakers.split('=');
    form.append(name, value);
  }
  form.append('audio', audio, audio.name || 'recording.webm');
  $('submit').disabled = true;
  try {
    const answer = await api('POST', '/api/sessions', form);
    status.textContent = 'Submitted.';
    await loadSessions(true).catch(() => {});
    showSession(answer.id, $('title').value.trim());
  } catch (err) {
    showFormError(err.field, err.message);
  } finally {
    $('submit').disabled = false;
  }
}

function showFormError(field, message) {
  const error = $('form-error');
  error.replaceChildren();
  if (field) error.append(el('strong', field), ': ');
  error.append(message);
  error.dataset.field = field || '';
  error.hidden = false;
}

// ---------------------------------------------------------------- progress (SSE over fetch)

let stream = null;
let shown = null;

function showSession(id, title) {
  shown = id;
  $('session').hidden = false; $('session').dataset.session = id;
  $('session-title').textContent = title || id;
  $('result').hidden = true; delete $('result').dataset.loaded;
  $('failure').hidden = true;
  setStep('');
  follow(id);
  $('session').scrollIntoView();
}

function setStep(state) {
  $('session').dataset.status = state;
  if (state !== 'transcribing') progressView().hidden = true;
  const at = STEPS.indexOf(state);
  for (const li of document.querySelectorAll('#steps li')) {
    const i = STEPS.indexOf(li.dataset.step);
    li.className = state === 'failed' ? '' : i < at ? 'done' : i === at ? 'current' : '';
  }
}

/** The transcription's progress under the steps: a <progress> bar and its note, made once. */
function progressView() {
  let view = $('progress');
  if (view) return view;
  view = el('p'); view.id = 'progress'; view.hidden = true;
  const bar = document.createElement('progress'); bar.id = 'progress-bar'; bar.max = 100; bar.value = 0;
  const text = el('span'); text.id = 'progress-text';
  view.append(bar, ' ', text);
  $('steps').after(view);
  return view;
}

/** Shows `event: progress` ({status, progress, note}) while the session is transcribing. */
function onProgress(event) {
  if (String(event.status || '') !== 'transcribing' || $('session').dataset.status !== 'transcribing') return;
  const percent = Math.max(0, Math.min(100, Number(event.progress) || 0));
  const view = progressView();
  $('progress-bar').value = percent;
  $('progress-text').textContent = percent + '%' + (event.note ? ' \u2014 ' + String(event.note) : '');
  view.hidden = false;
}

/** Reads `event: status` and `event: progress` blocks off the stream with fetch (EventSource sends no headers). */
async function follow(id) {
  if (stream) stream.abort();
  const control = new AbortController(); stream = control;
  let final = false;
  try {
    const r = await fetch('/api/sessions/' + encodeURIComponent(id) + '/events', {
      headers: Object.assign({'Accept': 'text/event-stream'}, auth()), signal: control.signal,
    });
    if (!r.ok) throw new ApiFailure(r.status, await r.json().catch(() => ({})));
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true}).replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        const event = parseEvent(block);
        if (event && event.name === 'status' && shown === id) final = onStatus(id, event.data) || final;
        else if (event && event.name === 'progress' && shown === id) onProgress(event.data);
      }
    }
  } catch (e) {
    if (control.signal.aborted) return;
    status.textContent = 'Progress: ' + e.message;
    if (e instanceof ApiFailure && e.status < 500) return;
  }
  // The stream ends after a final status; one that broke off before is opened again.
  if (!final && stream === control) setTimeout(() => { if (stream === control) follow(id); }, 2000);
}

function parseEvent(block) {
  let name = 'message'; const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') name = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return null;
  try { return {name, data: JSON.parse(data.join('\n'))}; } catch (_) { return null; }
}

/** Shows a status; true when it is final. */
function onStatus(id, event) {
  const state = String(event.status || '');
  setStep(state);
  rowStatus(id, state);
  if (state === 'failed') {
    const failure = $('failure'); failure.replaceChildren(el('strong', 'Failed: '));
    failure.append(event.error || 'no reason was recorded'); failure.hidden = false;
  } else if (state === 'ready') {
    loadResult(id);
  }
  return FINAL.includes(state);
}

// ---------------------------------------------------------------- the result

async function loadResult(id) {
  try {
    const [transcript, feedback] = await Promise.all([
      api('GET', '/api/sessions/' + encodeURIComponent(id) + '/transcript'),
      api('GET', '/api/sessions/' + encodeURIComponent(id) + '/feedback'),
    ]);
    if (shown !== id) return;
    const segments = transcript.segments || [];
    renderFeedback(feedback);
    renderTranscript(transcript);
    drawTalkTime(segments);
    drawPace(segments, scoreOf(feedback, 'words_per_minute'));
    drawPitch(feedback.metrics || {});
    $('result').hidden = false; $('result').dataset.loaded = id;
  } catch (e) {
    status.textContent = 'The result could not be read: ' + e.message;
  }
}

function scoreOf(feedback, name) { return ((feedback.scores || {}).metrics || {})[name] || null; }

const LABELS = {
  talk_ratio: 'Talk ratio', words_per_minute: 'Speaking pace', fillers_per_minute: 'Filler words',
  longest_monologue_seconds: 'Longest monologue', questions_per_10_min: 'Questions',
  patience_seconds: 'Patience', interruptions: 'Interruptions', vocabulary_diversity: 'Vocabulary',
  pitch_variation_semitones: 'Pitch variation', loudness_variation_db: 'Loudness variation',
  speaking_rate_variation: 'Pace variation', long_pauses: 'Long pauses',
};
const UNITS = {
  words_per_minute: ' wpm', fillers_per_minute: ' per min', longest_monologue_seconds: ' s',
  vocabulary_diversity: '', speaking_rate_variation: '',
  questions_per_10_min: ' per 10 min', patience_seconds: ' s', pitch_variation_semitones: ' st',
  loudness_variation_db: ' dB',
};

function number(name, value) {
  if (value == null) return null;
  if (name === 'talk_ratio') return Math.round(value * 100) + ' %';
  const places = Math.abs(value) >= 10 ? 1 : Math.abs(value) >= 1 ? 10 : 100;
  const rounded = Math.round(value * places) / places;
  return rounded + (UNITS[name] || '');
}

function band(name, target) {
  const t = target || {};
  const [min, max] = [number(name, t.min), number(name, t.max)];
  if (min != null && max != null) return min + ' – ' + max;
  if (max != null) return 'at most ' + max;
  if (min != null) return 'at least ' + min;
  return '';
}

function renderFeedback(feedback) {
  const scores = feedback.scores || {};
  $('overall').textContent = scores.overall == null
    ? 'Overall: unavailable (no metric could be scored).'
    : 'Overall: ' + scores.overall + ' / 5';
  const body = document.querySelector('#metrics tbody'); body.replaceChildren();
  // The labelled metrics in the order of LABELS, then any other the analysis scored.
  const order = Object.keys(LABELS);
  const rank = (name) => (order.includes(name) ? order.indexOf(name) : order.length);
  const scored = Object.entries(scores.metrics || {}).sort((a, b) => rank(a[0]) - rank(b[0]));
  for (const [name, m] of scored) {
    const tr = el('tr'); tr.dataset.metric = name;
    const value = number(name, m.value);
    cell(tr, LABELS[name] || name.replace(/_/g, ' '));
    if (value == null) { cell(tr, 'unavailable', 'na'); tr.className = 'unavailable'; }
    else cell(tr, value);
    cell(tr, band(name, m.target));
    cell(tr, m.score == null ? '–' : m.score + ' / 5');
    cell(tr, m.verdict || '', 'verdict');
    body.append(tr);
  }
  const notes = $('notes'); notes.replaceChildren();
  for (const note of feedback.notes || []) notes.append(el('li', note));
  const llm = feedback.llm;
  $('llm').hidden = !llm;
  if (llm) {
    $('llm-summary').textContent = llm.summary || '';
    for (const [id, items] of [['llm-strengths', llm.strengths], ['llm-improvements', llm.improvements]]) {
      $(id).replaceChildren(...(items || []).map((t) => el('li', t)));
    }
    const rubric = document.querySelector('#llm-rubric tbody'); rubric.replaceChildren();
    for (const r of llm.rubric || []) {
      const tr = el('tr'); cell(tr, r.criterion); cell(tr, r.score); cell(tr, r.evidence); rubric.append(tr);
    }
  }
}

function clock(seconds) {
  if (seconds == null) return '';
  const s = Math.max(0, Math.round(seconds));
  return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
}

function renderTranscript(transcript) {
  const info = transcript.speakers || {};
  $('speakers-info').textContent = 'Speakers: ' + [info.method, info.status, info.reason]
    .filter(Boolean).join(', ');
  const box = $('transcript'); box.replaceChildren();
  for (const s of transcript.segments || []) {
    const speaker = String(s.speaker || '');
    const turn = el('div', null, 'turn ' + (['user', 'partner'].includes(speaker) ? speaker : 'other'));
    turn.dataset.speaker = speaker;
    const head = el('div', null, 'who');
    head.append(el('span', speaker === 'user' ? 'you' : speaker), ' ',
      el('span', clock(s.start) + (s.end != null ? '–' + clock(s.end) : ''), 'time'));
    const text = el('p', null, 'text');
    const spans = [];
    for (const [key, cls] of [['questions', 'question'], ['hedges', 'hedge'], ['fillers', 'filler']]) {
      for (const span of s[key] || []) spans.push({start: span.start, end: span.end, cls});
    }
    marked(text, String(s.text || ''), spans);
    turn.append(head, text);
    box.append(turn);
  }
}

/** Appends `text` to `parent` with `spans` (character offsets, [start, end)) as nested marks. */
function marked(parent, text, spans) {
  const chars = Array.from(text);
  const queue = spans
    .filter((s) => Number.isInteger(s.start) && Number.isInteger(s.end) && s.end > s.start)
    .sort((a, b) => a.start - b.start || b.end - a.end);
  (function build(into, from, to) {
    let at = from;
    while (queue.length && queue[0].start < to) {
      const span = queue.shift();
      const start = Math.max(span.start, at), end = Math.min(span.end, to);
      if (end <= start) continue;
      if (start > at) into.append(chars.slice(at, start).join(''));
      const mark = el('mark', null, span.cls); mark.title = span.cls;
      build(mark, start, end);
      into.append(mark); at = end;
    }
    if (to > at) into.append(chars.slice(at, to).join(''));
  })(parent, 0, chars.length);
}

// ---------------------------------------------------------------- charts (inline SVG)

const W = 360, H = 150, PAD = {l: 40, r: 10, t: 10, b: 24};

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = String(text);
  return e;
}

function figure(id) {
  const f = $(id);
  for (const child of [...f.children]) if (child.tagName.toLowerCase() !== 'figcaption') child.remove();
  delete f.dataset.points;
  return f;
}

function unavailable(f, reason) {
  f.dataset.unavailable = 'true';
  f.append(el('p', 'Unavailable: ' + reason, 'na'));
}

function newChart(f, label) {
  delete f.dataset.unavailable;
  const svg = svgEl('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'chart'});
  f.append(svg);
  return svg;
}

function drawTalkTime(segments) {
  const f = figure('chart-talk');
  const seconds = new Map();
  for (const s of segments) {
    if (s.start == null || s.end == null || s.end < s.start) continue;
    const who = String(s.speaker || 'unknown');
    seconds.set(who, (seconds.get(who) || 0) + (s.end - s.start));
  }
  const total = [...seconds.values()].reduce((a, b) => a + b, 0);
  if (!total) { unavailable(f, 'the transcript has no timings'); return; }
  const svg = newChart(f, 'talk time per speaker');
  const rows = [...seconds.entries()].sort((a, b) => (a[0] === 'user' ? -1 : b[0] === 'user' ? 1 : 0));
  const barH = Math.min(36, (H - 20) / rows.length - 8);
  const left = 70, width = W - left - 80;
  rows.forEach(([who, secs], i) => {
    const y = 10 + i * (barH + 12);
    svg.append(svgEl('text', {x: 0, y: y + barH / 2 + 4, class: 'label'}, who === 'user' ? 'you' : who));
    svg.append(svgEl('rect', {x: left, y, width: Math.max(1, width * secs / total), height: barH,
      class: 'bar ' + (who === 'user' ? 'user' : 'partner'), 'data-seconds': secs.toFixed(1)}));
    svg.append(svgEl('text', {x: left + width * secs / total + 4, y: y + barH / 2 + 4, class: 'label'},
      Math.round(secs) + ' s · ' + Math.round(100 * secs / total) + ' %'));
  });
  f.dataset.points = String(rows.length);
}

function words(text) { return String(text || '').trim().split(/\s+/).filter(Boolean).length; }

function drawPace(segments, score) {
  const f = figure('chart-pace');
  const points = [];
  let end = 0;
  for (const s of segments) {
    if (s.start == null || s.end == null) continue;
    end = Math.max(end, s.end);
    const minutes = (s.end - s.start) / 60;
    if (s.speaker !== 'user' || minutes < 1 / 120) continue;
    points.push([(s.start + s.end) / 2, words(s.text) / minutes]);
  }
  if (!points.length) { unavailable(f, (score && score.verdict) || 'no timed speech of yours'); return; }
  const target = (score && score.target) || {};
  lineChart(newChart(f, 'speaking pace over the call'), points, {
    xMax: end, yMin: 0, yMax: Math.max(200, target.max || 0, ...points.map((p) => p[1])) * 1.05,
    band: [target.min, target.max], unit: 'wpm',
  });
  f.dataset.points = String(points.length);
}

function drawPitch(metrics) {
  const f = figure('chart-pitch');
  const voice = metrics.voice;
  if (!voice) { unavailable(f, metrics.voice_note || 'no voice metrics for this session'); return; }
  const contour = (voice.pitch_contour || []).filter((p) => Array.isArray(p) && p.length === 2);
  if (!contour.length) { unavailable(f, 'too little voiced speech to follow the pitch'); return; }
  const hz = contour.map((p) => p[1]);
  const [low, high] = [Math.min(...hz), Math.max(...hz)];
  const margin = Math.max(10, (high - low) * 0.15);
  lineChart(newChart(f, 'pitch over the call'), contour, {
    xMax: Math.max(...contour.map((p) => p[0])) + 1, yMin: Math.max(0, low - margin),
    yMax: high + margin, band: [], unit: 'Hz',
  });
  f.dataset.points = String(contour.length);
}

/** Points [x seconds, y] as a line with dots; the optional band [min, max] shaded. */
function lineChart(svg, points, {xMax, yMin, yMax, band, unit}) {
  const x = (v) => PAD.l + (W - PAD.l - PAD.r) * (xMax > 0 ? v / xMax : 0);
  const y = (v) => H - PAD.b - (H - PAD.t - PAD.b) * (yMax > yMin ? (v - yMin) / (yMax - yMin) : 0);
  const [bandMin, bandMax] = band || [];
  if (bandMin != null || bandMax != null) {
    const top = y(Math.min(yMax, bandMax != null ? bandMax : yMax));
    const bottom = y(Math.max(yMin, bandMin != null ? bandMin : yMin));
    svg.append(svgEl('rect', {x: PAD.l, y: top, width: W - PAD.l - PAD.r, height: Math.max(0, bottom - top), class: 'band'}));
  }
  svg.append(svgEl('line', {x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: 'axis'}));
  svg.append(svgEl('line', {x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, class: 'axis'}));
  for (const v of [yMin, (yMin + yMax) / 2, yMax]) {
    svg.append(svgEl('text', {x: PAD.l - 4, y: y(v) + 4, class: 'tick', 'text-anchor': 'end'}, Math.round(v)));
  }
  svg.append(svgEl('text', {x: PAD.l, y: H - 6, class: 'tick'}, '0:00'));
  svg.append(svgEl('text', {x: W - PAD.r, y: H - 6, class: 'tick', 'text-anchor': 'end'}, clock(xMax)));
  svg.append(svgEl('text', {x: (W + PAD.l) / 2, y: H - 6, class: 'tick', 'text-anchor': 'middle'}, unit + ' over time'));
  svg.append(svgEl('polyline', {points: points.map((p) => x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1)).join(' '), class: 'line'}));
  for (const p of points) {
    const dot = svgEl('circle', {cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.5, class: 'dot'});
    dot.append(svgEl('title', null, clock(p[0]) + ': ' + Math.round(p[1]) + ' ' + unit));
    svg.append(dot);
  }
}

// ---------------------------------------------------------------- wiring

$('login').onsubmit = (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token').value = '';
  signIn();
};
$('logout').onclick = () => {
  sessionStorage.removeItem(TOKEN_KEY);
  if (stream) stream.abort();
  location.reload();
};
$('record').onclick = toggleRecording;
$('file').onchange = () => {
  if ($('file').files.length) { recorded = null; $('recorded').textContent = ''; delete $('recorded').dataset.state; }
};
$('upload').onsubmit = submit;
$('more').onclick = () => loadSessions(false).catch((e) => { status.textContent = 'Error: ' + e.message; });
signIn();
