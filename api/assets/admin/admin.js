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
