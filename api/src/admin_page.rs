//! `/admin`: the operators' page. One static document (no outside scripts): the operator pastes
//! an operator token, which stays in this tab's sessionStorage; the page then calls the
//! `/api/admin` routes with it, refreshes every two seconds, and writes every value with
//! `textContent`, so nothing a job carries can run as markup.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin", get(page))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        PAGE,
    )
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voxline operators</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
th{background:#f5f5f5}.err{color:#a00;max-width:40rem;white-space:pre-wrap}button{margin-right:.3rem}
#status{color:#666}pre{background:#f7f7f7;padding:.5rem;max-width:60rem;overflow:auto}
</style></head><body>
<h1>voxline operators</h1>
<form id="login"><label>Operator token <input id="token" type="password" size="60" autocomplete="off"></label>
<button type="submit">Sign in</button></form>
<p id="status"></p>
<section id="main" hidden>
<h2>Queues</h2><table id="queues"><thead><tr><th>queue</th><th>scheduled</th><th>available</th><th>running</th>
<th>retrying</th><th>done</th><th>dead</th><th>cancelled</th><th>oldest due</th><th>done 5m</th><th>failed 5m</th></tr></thead><tbody></tbody></table>
<h2>Dead letters</h2><table id="dead"><thead><tr><th>id</th><th>queue</th><th>kind</th><th>attempts</th><th>last error</th><th></th></tr></thead><tbody></tbody></table>
<h2>Job</h2><pre id="detail">Select a job id to see its payload and errors.</pre>
</section>
<script>
const STATES = ['scheduled','available','running','retrying','done','dead','cancelled'];
const status = document.getElementById('status');
function token() { return sessionStorage.getItem('voxline-token') || ''; }
async function api(method, path) {
  const r = await fetch(path, {method, headers: {'Authorization': 'Bearer ' + token()}});
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || ('HTTP ' + r.status));
  return body;
}
function cell(row, text) { const td = document.createElement('td'); td.textContent = text; row.append(td); return td; }
async function refresh() {
  if (!token()) return;
  try {
    const q = await api('GET', '/api/admin/queues');
    const qb = document.querySelector('#queues tbody'); qb.replaceChildren();
    for (const queue of q.queues) {
      const tr = document.createElement('tr'); cell(tr, queue.queue);
      for (const s of STATES) cell(tr, String(queue.counts[s]));
      cell(tr, queue.oldest_available_age_ms == null ? '-' : (queue.oldest_available_age_ms / 1000).toFixed(1) + ' s');
      cell(tr, String(queue.done_last_5m)); cell(tr, String(queue.failed_last_5m)); qb.append(tr);
    }
    const d = await api('GET', '/api/admin/jobs?state=dead&limit=100');
    // Rows are kept per job id and only their text is updated, so a button the operator is
    // about to click is never swapped for a new one by the 2-second refresh.
    const db = document.querySelector('#dead tbody');
    const rows = new Map([...db.children].map((tr) => [tr.dataset.job, tr]));
    for (const job of d.jobs) {
      let tr = rows.get(String(job.id)); rows.delete(String(job.id));
      if (!tr) tr = deadRow(job);
      tr.cells[3].textContent = job.attempt + '/' + job.max_attempts;
      tr.cells[4].textContent = job.last_error || '';
      db.append(tr);
    }
    for (const gone of rows.values()) gone.remove();
    document.getElementById('main').hidden = false;
    status.textContent = 'Updated ' + new Date().toLocaleTimeString();
  } catch (e) { status.textContent = 'Error: ' + e.message; }
}
function deadRow(job) {
  const tr = document.createElement('tr'); tr.dataset.job = job.id;
  const idCell = cell(tr, ''); const a = document.createElement('a'); a.href = '#'; a.textContent = String(job.id);
  a.onclick = (e) => { e.preventDefault(); show(job.id); }; idCell.append(a);
  cell(tr, job.queue); cell(tr, job.kind); cell(tr, ''); cell(tr, '').className = 'err';
  const actions = cell(tr, '');
  for (const [label, action] of [['Retry', 'retry'], ['Discard', 'discard']]) {
    const b = document.createElement('button'); b.textContent = label; b.dataset.action = action;
    b.onclick = () => act(job.id, action); actions.append(b);
  }
  return tr;
}
async function show(id) {
  try { document.getElementById('detail').textContent = JSON.stringify(await api('GET', '/api/admin/jobs/' + id), null, 2); }
  catch (e) { status.textContent = 'Error: ' + e.message; }
}
async function act(id, action) {
  try { await api('POST', '/api/admin/jobs/' + id + '/' + action); status.textContent = 'Job ' + id + ': ' + action + ' done'; }
  catch (e) { status.textContent = 'Error: ' + e.message; }
  refresh(); show(id);
}
document.getElementById('login').onsubmit = (e) => {
  e.preventDefault(); sessionStorage.setItem('voxline-token', document.getElementById('token').value.trim()); refresh();
};
refresh(); setInterval(refresh, 2000);
</script></body></html>"#;
