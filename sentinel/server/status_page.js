(() => {
'use strict';
const CFG = JSON.parse(document.getElementById('sentinel-config').textContent);
const STATES = ['firing', 'pending', 'warming', 'ok'];
const RANK = {firing: 0, pending: 1, warming: 2, ok: 3};
const STATE_COLOR = {firing: '#ef4444', pending: '#f59e0b', warming: '#60a5fa', ok: '#22c55e'};
const FIELD_COLORS = ['#7dd3fc', '#c4b5fd', '#fda4af', '#fcd34d', '#86efac', '#f0abfc', '#fdba74', '#5eead4'];
const SVGNS = 'http://www.w3.org/2000/svg';
const VW = 1000, VH = 100;
const focusKey = new URLSearchParams(location.search).get('stream');
const ui = {state: null, text: ''};
let last = {streams: [], counts: {}, capped: {}, status: null, histories: new Map()};
let inflight = false;

const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function sv(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}
function fmt(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}
function fmtTime(ts) {
  if (ts === null || ts === undefined) return '–';
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false});
}
function fmtAge(ts) {
  if (ts === null || ts === undefined) return '–';
  let s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 90) return Math.round(s) + 's ago';
  s /= 60; if (s < 90) return Math.round(s) + 'm ago';
  s /= 60; if (s < 48) return Math.round(s) + 'h ago';
  return Math.round(s / 24) + 'd ago';
}
function streamHref(key) { return './?stream=' + encodeURIComponent(key); }
function historyUrl(key) { return 'api/v1/streams/' + encodeURIComponent(key) + '/history'; }

async function getJSON(url) {
  const r = await fetch(url, {cache: 'no-store', headers: {Accept: 'application/json'}});
  if (!r.ok) { const err = new Error(url + ': HTTP ' + r.status); err.status = r.status; throw err; }
  const j = await r.json();
  if (j.status !== 'success') throw new Error(j.error || 'API error');
  return j.data;
}

function byRank(a, b) {
  const r = (RANK[a.state] ?? 9) - (RANK[b.state] ?? 9);
  if (r) return r;
  const sa = Number.isFinite(a.score) ? a.score : -1, sb = Number.isFinite(b.score) ? b.score : -1;
  if (sb !== sa) return sb - sa;
  return a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : 0;
}
function visible(streams) {
  const q = ui.text.toLowerCase();
  return streams.filter((s) => (!ui.state || s.state === ui.state) && (!q || s.stream.toLowerCase().includes(q)));
}

// ---------------------------------------------------------------- charts
function extent(arrays, lo0, hi0) {
  let lo = Infinity, hi = -Infinity;
  for (const arr of arrays) for (const v of arr) if (v !== null && Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo0 !== undefined) lo = Math.min(lo, lo0);
  if (hi0 !== undefined) hi = Math.max(hi, hi0);
  if (!Number.isFinite(lo)) return [0, 1];
  if (hi - lo < 1e-12) { const d = Math.abs(hi) * 0.05 || 0.5; lo -= d; hi += d; }
  return [lo, hi];
}
function pathOf(ts, vals, x, y) {
  let d = '', pen = false;
  const n = Math.min(ts.length, vals.length);
  for (let i = 0; i < n; i++) {
    const v = vals[i];
    if (v === null || !Number.isFinite(v)) { pen = false; continue; }
    d += (pen ? 'L' : 'M') + x(ts[i]).toFixed(1) + ' ' + y(v).toFixed(2);
    pen = true;
  }
  return d;
}
// The shaded area between lower and upper (one closed path per run of points that have both)
function bandPath(ts, lower, upper, x, y) {
  let d = '', run = [];
  const flush = () => {
    if (run.length) {
      d += 'M' + run.map((i) => x(ts[i]).toFixed(1) + ' ' + y(upper[i]).toFixed(2)).join('L');
      d += 'L' + run.slice().reverse().map((i) => x(ts[i]).toFixed(1) + ' ' + y(lower[i]).toFixed(2)).join('L') + 'Z';
    }
    run = [];
  };
  const n = Math.min(ts.length, lower.length, upper.length);
  for (let i = 0; i < n; i++) {
    const a = lower[i], b = upper[i];
    if (a === null || b === null || !Number.isFinite(a) || !Number.isFinite(b)) { flush(); continue; }
    run.push(i);
  }
  flush();
  return d;
}
// One panel: series = [{name, values, color, dash, fill}]; bands = [{lower, upper, color}] drawn under them
function panel(label, ts, series, spans, range, bands) {
  const wrap = el('div', 'panel');
  const t0 = ts[0], t1 = ts[ts.length - 1] > t0 ? ts[ts.length - 1] : t0 + 1;
  const [lo, hi] = range || extent(series.map((s) => s.values).concat(...(bands || []).map((b) => [b.lower, b.upper])));
  const x = (t) => (t - t0) / (t1 - t0) * VW;
  const y = (v) => VH * 0.95 - (v - lo) / (hi - lo) * VH * 0.75;  // top 20% is left for the legend
  const svgEl = sv('svg', {viewBox: `0 0 ${VW} ${VH}`, preserveAspectRatio: 'none', class: 'chart', role: 'img'});
  svgEl.setAttribute('aria-label', label);
  for (const [s, e] of spans || []) {
    const xs = Math.max(0, x(s)), xe = Math.min(VW, x(e === null || e === undefined ? t1 : e));
    if (xe <= 0 || xs >= VW) continue;
    svgEl.appendChild(sv('rect', {x: xs, y: 0, width: Math.max(xe - xs, 2), height: VH, fill: 'rgba(239,68,68,0.20)', class: 'span'}));
  }
  for (const b of bands || []) {
    const d = bandPath(ts, b.lower, b.upper, x, y);
    if (d) svgEl.appendChild(sv('path', {d, fill: b.color, 'fill-opacity': 0.22, stroke: 'none', class: 'band'}));
  }
  for (const s of series) {
    const d = pathOf(ts, s.values, x, y);
    if (!d) continue;
    if (s.fill) {
      const area = d + `L${x(ts[ts.length - 1]).toFixed(1)} ${VH}L${x(t0).toFixed(1)} ${VH}Z`;
      // area only makes sense without gaps; keep it simple: draw it under the line
      svgEl.appendChild(sv('path', {d: area, fill: s.fill, stroke: 'none'}));
    }
    const p = sv('path', {d, fill: 'none', stroke: s.color, 'stroke-width': s.width || 1.4,
      'vector-effect': 'non-scaling-stroke', 'stroke-linejoin': 'round'});
    if (s.dash) p.setAttribute('stroke-dasharray', s.dash);
    svgEl.appendChild(p);
  }
  wrap.appendChild(svgEl);
  const lbl = el('div', 'lbl');
  for (const s of series) {
    const i = el('i', null, s.name);
    i.style.color = s.color;
    lbl.appendChild(i);
  }
  if (!series.length) lbl.textContent = label;
  wrap.appendChild(lbl);
  wrap.appendChild(el('div', 'ymax', fmt(hi)));
  wrap.appendChild(el('div', 'ymin', fmt(lo)));
  const cross = el('div', 'cross');
  wrap.appendChild(cross);
  return {wrap, cross};
}
function nearest(ts, t) {
  let lo = 0, hi = ts.length - 1;
  while (hi - lo > 1) { const m = (lo + hi) >> 1; if (ts[m] < t) lo = m; else hi = m; }
  return Math.abs(ts[lo] - t) <= Math.abs(ts[hi] - t) ? lo : hi;
}
function charts(h, row) {
  const box = el('div', 'charts');
  const ts = h.ts || [];
  if (!ts.length) { box.appendChild(el('div', 'empty', 'no samples yet')); return box; }
  const fields = h.fields && h.fields.length ? h.fields : (row && row.fields) || ['value'];
  const values = h.values || [];
  const fieldSeries = fields.map((f, j) => ({name: f, color: FIELD_COLORS[j % FIELD_COLORS.length],
    values: values.map((r) => (Array.isArray(r) ? r[j] : r))}));
  const col = (rows, j) => (rows || []).map((r) => (Array.isArray(r) ? r[j] : null));
  const bands = h.lower && h.upper ? fields.map((f, j) => ({lower: col(h.lower, j), upper: col(h.upper, j),
    color: FIELD_COLORS[j % FIELD_COLORS.length]})) : [];
  const spans = h.alert_spans || [];
  const panels = [
    panel('value', ts, fieldSeries, spans, undefined, bands),
    panel('error / threshold', ts, [
      {name: 'error', values: h.error || [], color: '#a78bfa'},
      {name: 'threshold', values: h.threshold || [], color: '#e5e7eb', dash: '4 3', width: 1},
    ], spans),
    panel('score', ts, [{name: 'score', values: h.score || [], color: '#f472b6', fill: 'rgba(244,114,182,0.12)'}], spans, [0, 1]),
  ];
  for (const p of panels) box.appendChild(p.wrap);
  const ax = el('div', 'xaxis');
  ax.appendChild(el('span', null, fmtTime(ts[0])));
  ax.appendChild(el('span', null, ts.length + ' points'));
  ax.appendChild(el('span', null, fmtTime(ts[ts.length - 1])));
  box.appendChild(ax);
  const readout = el('div', 'readout', '\u00a0');
  box.appendChild(readout);
  const t0 = ts[0], t1 = ts[ts.length - 1] > t0 ? ts[ts.length - 1] : t0 + 1;
  box.addEventListener('mousemove', (ev) => {
    const r = panels[0].wrap.getBoundingClientRect();
    const fx = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
    const i = nearest(ts, t0 + fx * (t1 - t0));
    const px = ((ts[i] - t0) / (t1 - t0) * 100).toFixed(2) + '%';
    for (const p of panels) { p.cross.style.left = px; p.cross.style.display = 'block'; }
    const parts = [fmtTime(ts[i])];
    fieldSeries.forEach((s, j) => {
      const b = bands[j];
      const lo = b ? b.lower[i] : null, up = b ? b.upper[i] : null;
      parts.push(s.name + ' ' + fmt(s.values[i]) + (Number.isFinite(lo) && Number.isFinite(up) ? ' (expected ' + fmt(lo) + '–' + fmt(up) + ')' : ''));
    });
    parts.push('error ' + fmt((h.error || [])[i]), 'thr ' + fmt((h.threshold || [])[i]), 'score ' + fmt((h.score || [])[i]));
    readout.textContent = parts.join('  ·  ');
  });
  box.addEventListener('mouseleave', () => {
    for (const p of panels) p.cross.style.display = 'none';
    readout.textContent = '\u00a0';
  });
  return box;
}

function card(row, hist, focused) {
  const c = el('div', 'card ' + (row.state || ''));
  c.dataset.stream = row.stream;
  const hd = el('div', 'hd');
  hd.appendChild(el('span', 'pill ' + row.state, row.state));
  const name = el('a', 'name', row.stream);
  name.href = streamHref(row.stream);
  name.title = row.stream;
  hd.appendChild(name);
  const sc = el('span', 'score');
  sc.append('score ');
  sc.appendChild(el('b', null, fmt(row.score)));
  hd.appendChild(sc);
  c.appendChild(hd);
  if (focused) {
    const dl = el('dl', 'details');
    const add = (k, v) => { dl.appendChild(el('dt', null, k)); dl.appendChild(el('dd', null, v)); };
    add('measurement', row.measurement ?? '–');
    add('labels', Object.entries(row.labels || {}).map(([k, v]) => k + '=' + v).join(', ') || '–');
    add('fields', (row.fields || []).join(', ') || '–');
    add('error / threshold', fmt(row.error) + ' / ' + fmt(row.threshold));
    add('expected', (row.fields || []).map((f, j) => f + ' ' + fmt((row.expected || [])[j]) + ' (' +
      fmt((row.lower || [])[j]) + '–' + fmt((row.upper || [])[j]) + ')').join(', ') || '–');
    add('model version', row.model_version ?? '–');
    add('last sample', row.last_ts ? fmtTime(row.last_ts) + ' (' + fmtAge(row.last_ts) + ')' : '–');
    add('alerts', row.alerts_total ?? 0);
    c.appendChild(dl);
  }
  if (hist) c.appendChild(charts(hist, row));
  else c.appendChild(el('div', 'empty', 'loading…'));
  return c;
}

// ---------------------------------------------------------------- header, table
function renderChips() {
  const box = $('chips');
  box.replaceChildren();
  for (const s of STATES) {
    const b = el('button', 'chip' + (ui.state === s ? ' active' : ''));
    b.type = 'button';
    b.dataset.state = s;
    const sw = el('span', 'sw'); sw.style.background = STATE_COLOR[s];
    b.appendChild(sw);
    b.appendChild(el('span', null, s));
    const n = last.counts[s] ?? 0;
    b.appendChild(el('span', 'n', n + (last.capped[s] ? '+' : '')));
    b.addEventListener('click', () => { ui.state = ui.state === s ? null : s; renderAll(); refresh(); });
    box.appendChild(b);
  }
  const worst = STATES.find((s) => (last.counts[s] || 0) > 0 && s !== 'ok' && s !== 'warming');
  const dot = $('dot');
  dot.style.background = worst ? STATE_COLOR[worst] : STATE_COLOR.ok;
  dot.style.boxShadow = '0 0 8px ' + dot.style.background;
}
function renderTable(rows) {
  const tb = $('tbody');
  tb.replaceChildren();
  const shown = rows.slice(0, CFG.tableLimit);
  for (const r of shown) {
    const tr = el('tr');
    const st = el('td'); st.appendChild(el('span', 'pill ' + r.state, r.state)); tr.appendChild(st);
    const k = el('td', 'key'); const a = el('a', null, r.stream); a.href = streamHref(r.stream); a.title = r.stream;
    k.appendChild(a); tr.appendChild(k);
    const sc = el('td'); const bar = el('span', 'bar'); const fill = el('span');
    const sv0 = Number.isFinite(r.score) ? Math.max(0, Math.min(1, r.score)) : 0;
    fill.style.width = (sv0 * 100).toFixed(1) + '%'; fill.style.background = STATE_COLOR[r.state] || '#888';
    bar.appendChild(fill); sc.appendChild(bar); sc.append(fmt(r.score)); tr.appendChild(sc);
    tr.appendChild(el('td', 'num', fmt(r.error)));
    tr.appendChild(el('td', 'num', fmt(r.threshold)));
    tr.appendChild(el('td', 'num', r.model_version ?? '–'));
    tr.appendChild(el('td', 'num', fmtAge(r.last_ts)));
    tr.appendChild(el('td', 'num', r.alerts_total ?? 0));
    tb.appendChild(tr);
  }
  if (rows.length > shown.length) {
    const tr = el('tr'); const td = el('td', 'more', (rows.length - shown.length) + ' more not shown — use the filter');
    td.colSpan = 8; tr.appendChild(td); tb.appendChild(tr);
  }
  $('table-sub').textContent = '(' + rows.length + ')';
}
function chartRows(rows) {
  if (focusKey !== null) return rows.filter((r) => r.stream === focusKey);
  return rows.slice(0, CFG.chartStreams);
}
function renderGrid(rows) {
  const grid = $('grid');
  grid.replaceChildren();
  if (focusKey !== null) {
    grid.classList.add('focus');
    let row = rows.find((r) => r.stream === focusKey);
    const hist = last.histories.get(focusKey);
    if (!row && hist) row = {stream: focusKey, state: 'ok', fields: hist.fields, labels: {}};
    if (!row) { grid.appendChild(el('div', 'empty', last.status ? 'unknown stream: ' + focusKey : 'loading…')); return; }
    grid.appendChild(card(row, hist, true));
    return;
  }
  const cr = chartRows(rows);
  for (const r of cr) grid.appendChild(card(r, last.histories.get(r.stream), false));
  if (!cr.length) grid.appendChild(el('div', 'empty', last.status ? 'no streams match' : 'loading…'));
  $('charts-sub').textContent = rows.length > cr.length ? '(top ' + cr.length + ' of ' + rows.length + ')' : '';
}
function renderFeedback() {
  const fb = last.feedback || [];
  const box = $('feedback');
  if (!box) return;
  box.hidden = !fb.length;
  const tb = $('fbody');
  tb.replaceChildren();
  const shown = focusKey !== null ? fb.filter((f) => f.stream === focusKey) : fb;
  for (const f of shown.slice(-50).reverse()) {
    const tr = el('tr');
    tr.appendChild(el('td', null, fmtTime(f.at)));
    const k = el('td', 'key'); const a = el('a', null, f.stream); a.href = streamHref(f.stream); k.appendChild(a); tr.appendChild(k);
    tr.appendChild(el('td', null, f.label));
    tr.appendChild(el('td', 'num', fmtTime(f.from) + ' – ' + fmtTime(f.to)));
    tr.appendChild(el('td', null, f.source || ''));
    tr.appendChild(el('td', null, f.comment || ''));
    tb.appendChild(tr);
  }
  $('feedback-sub').textContent = '(' + shown.length + ')';
}
function renderAll() {
  renderChips();
  renderFeedback();
  const rows = visible(last.streams);
  renderGrid(rows);
  renderTable(rows);
  const st = last.status;
  const banner = $('banner');
  if (st && !st.ready) { banner.hidden = false; banner.textContent = 'Not ready: ' + (st.reason || 'starting'); }
  else banner.hidden = true;
}

// ---------------------------------------------------------------- polling
async function pool(items, n, fn) {
  const queue = items.slice();
  const workers = Array.from({length: Math.min(n, queue.length)}, async () => {
    while (queue.length) await fn(queue.shift());
  });
  await Promise.all(workers);
}
async function refresh() {
  if (inflight) return;
  inflight = true;
  const upd = $('upd');
  try {
    const [status, ...lists] = await Promise.all([
      getJSON('api/v1/status'),
      ...STATES.map((s) => getJSON('api/v1/streams?state=' + s + '&limit=' + CFG.tableLimit)),
    ]);
    const counts = {}, capped = {};
    STATES.forEach((s, i) => { counts[s] = lists[i].length; capped[s] = lists[i].length >= CFG.tableLimit; });
    if (status.counts) for (const s of STATES) if (s in status.counts) { counts[s] = status.counts[s]; capped[s] = false; }
    const streams = [].concat(...lists).sort(byRank);
    const want = chartRows(visible(streams)).map((r) => r.stream);
    if (focusKey !== null && !want.includes(focusKey)) want.push(focusKey);
    const histories = new Map();
    await pool(want, 6, async (key) => {
      try { histories.set(key, await getJSON(historyUrl(key))); }
      catch (e) { if (e.status !== 404) throw e; }
    });
    let feedback = last.feedback || [];
    try { feedback = await getJSON('api/v1/feedback'); } catch (e) { /* an older server: no feedback list */ }
    last = {streams, counts, capped, status, histories, feedback};
    renderAll();
    upd.className = 'upd';
    upd.textContent = 'updated ' + new Date().toLocaleTimeString([], {hour12: false});
  } catch (e) {
    upd.className = 'upd bad';
    upd.textContent = 'offline: ' + (e && e.message ? e.message : e);
  } finally {
    inflight = false;
  }
}

if (focusKey !== null) {
  $('focus-nav').hidden = false;
  $('charts-title').firstChild.textContent = 'Stream ';
  $('table-title').hidden = true;
  $('table').hidden = true;
}
let qTimer = null;
$('q').addEventListener('input', (ev) => {
  ui.text = ev.target.value;
  renderAll();
  clearTimeout(qTimer);
  qTimer = setTimeout(refresh, 300);
});
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
setInterval(() => { if (!document.hidden) refresh(); }, CFG.refreshMs);
refresh();
})();
