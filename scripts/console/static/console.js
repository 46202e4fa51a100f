// twokey console page: draws the policy graph, shows certificates, and lists live decisions.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const state = { graph: null, counts: [], decisions: [], selected: null };
const MAX_ROWS = 500;

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJson(url) {
  const res = await fetch(url, { credentials: 'same-origin' });
  if (res.status === 401) {
    location.assign('/login?error=expired');
    throw new Error('session ended');
  }
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

// Columns by how far a workload sits from the services that call nothing: callers left, callees right.
const W = 1200;
const H = 720;
const R = 40;

function layout(graph) {
  const rank = new Map(graph.nodes.map((n) => [n.name, 0]));
  for (let i = 0; i < graph.nodes.length; i++) {
    for (const e of graph.edges) if (rank.has(e.to) && e.from !== e.to) rank.set(e.from, Math.max(rank.get(e.from), rank.get(e.to) + 1));
  }
  const maxRank = Math.max(0, ...rank.values());
  const columns = new Map();
  for (const n of graph.nodes) {
    const r = rank.get(n.name);
    if (!columns.has(r)) columns.set(r, []);
    columns.get(r).push(n.name);
  }
  const pos = new Map();
  for (const [r, names] of columns) {
    const x = maxRank === 0 ? W / 2 : 70 + ((maxRank - r) / maxRank) * (W - 140);
    // Lone nodes alternate above and below the middle, so a chain of them is not one straight line.
    names.forEach((name, i) => pos.set(name, { x, y: names.length === 1 ? H / 2 + (r % 2 ? 150 : -150) : ((i + 1) * H) / (names.length + 1) }));
  }
  return pos;
}

const overlaps = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

// Each edge's label is a box of its methods, placed near the edge's middle where it hides nothing.
function placeLabel(box, taken) {
  for (let step = 0; step < 60; step++) {
    const shift = (step % 2 ? 1 : -1) * Math.ceil(step / 2) * 12;
    const candidate = { ...box, y: box.y + shift };
    if (candidate.y >= 0 && candidate.y + box.h <= H && !taken.some((t) => overlaps(candidate, t))) return candidate;
  }
  return box;
}

function drawGraph() {
  const graph = state.graph;
  const root = document.getElementById('graph');
  root.setAttribute('viewBox', `0 0 ${W} ${H}`);
  root.replaceChildren();
  const pos = layout(graph);
  // A grant on a service no workload serves still gets a node, so no grant goes unseen.
  for (const e of graph.edges) if (!pos.has(e.to)) pos.set(e.to, { x: W / 2, y: H - R - 10 });
  const counts = new Map(state.counts.map((c) => [`${c.from}>${c.to}`, c]));
  const taken = [...pos.values()].map((p) => ({ x: p.x - R - 4, y: p.y - R - 4, w: 2 * R + 8, h: 2 * R + 8 }));
  const lines = svg('g');
  const labels = svg('g');
  for (const e of graph.edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    const c = counts.get(`${e.from}>${e.to}`);
    const cls = `edge${c ? ' live' : ''}${c && c.denied > 0 ? ' denials' : ''}`;
    const attrs = { class: cls, 'data-from': e.from, 'data-to': e.to, 'data-service': e.service };
    lines.append(svg('line', { ...attrs, x1: a.x, y1: a.y, x2: b.x, y2: b.y, 'marker-end': 'url(#arrow)' }));
    const texts = e.methods.map((m) => `${m.name} · ${m.permission ?? 'certificate only'}`);
    const title = `${e.from} → ${e.to}: ${e.service.split('.').pop()}${e.wildcard ? ' (all methods)' : ''}`;
    const width = Math.max(title.length + 10, ...texts.map((t) => t.length)) * 6.8 + 12;
    const height = (texts.length + 1) * 13 + 8;
    const mx = (a.x + b.x) / 2;
    const my = (a.y + b.y) / 2;
    const box = placeLabel({ x: mx - width / 2, y: my - height / 2, w: width, h: height }, taken);
    taken.push(box);
    const g = svg('g', attrs);
    if (Math.abs(box.y + box.h / 2 - my) > box.h / 2) g.append(svg('line', { class: 'leader', x1: mx, y1: my, x2: box.x + box.w / 2, y2: box.y + (box.y > my ? 0 : box.h) }));
    g.append(svg('rect', { x: box.x, y: box.y, width: box.w, height: box.h, rx: 4, class: 'label-box' }));
    const label = svg('text', { x: box.x + 6, y: box.y + 14, class: 'methods' });
    label.append(svg('tspan', { x: box.x + 6, class: 'edge-title' }, title));
    if (c) label.append(svg('tspan', { class: 'ok allowed', dx: 8 }, `✓${c.allowed}`), svg('tspan', { class: 'bad denied', dx: 6 }, `✗${c.denied}`));
    texts.forEach((t, i) => label.append(svg('tspan', { x: box.x + 6, dy: 13, class: 'method', 'data-method': e.methods[i].name }, t)));
    g.append(label);
    labels.append(g);
  }
  const defs = svg('defs');
  const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10 + R / 1.5, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto-start-reverse' });
  marker.append(svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' }));
  defs.append(marker);
  root.append(defs, lines);
  for (const [name, p] of pos) {
    const g = svg('g', { class: `node${state.selected === name ? ' selected' : ''}`, 'data-name': name, tabindex: 0 });
    g.append(svg('circle', { cx: p.x, cy: p.y, r: R }), svg('text', { x: p.x, y: p.y }, name));
    g.addEventListener('click', () => select(name));
    root.append(g);
  }
  root.append(labels);
}

function list(title, items) {
  const frag = document.createDocumentFragment();
  frag.append(el('h3', {}, title));
  if (items.length === 0) frag.append(el('p', {}, '(none)'));
  else {
    const ul = el('ul');
    for (const i of items) ul.append(el('li', { class: 'mono' }, i));
    frag.append(ul);
  }
  return frag;
}

async function select(name) {
  state.selected = name;
  drawGraph();
  const node = state.graph.nodes.find((n) => n.name === name);
  const details = document.getElementById('details');
  details.replaceChildren(el('h2', {}, name), el('p', { class: 'mono' }, node ? node.spiffeId : 'not a registry workload'));
  if (!node) return;
  details.append(
    list('serves', node.serves),
    list('grants (certificate)', state.graph.edges.filter((e) => e.from === name).flatMap((e) => e.methods.map((m) => `${m.path} → ${m.permission ?? 'certificate only'}`))),
    list('service token scopes', node.serviceScopes),
    list('delegation scopes', node.delegation.scopes),
    list('delegation audiences', node.delegation.audiences),
  );
  if (node.delegation.scopes.length > 0) details.append(el('p', {}, node.delegation.withoutSubjectToken ? 'may act for an absent user' : 'only with the user’s token'));
  const box = el('div', { id: 'certificate' }, 'loading certificate…');
  details.append(el('h3', {}, 'issued certificate'), box);
  try {
    const cert = await getJson(`/api/certificate?workload=${encodeURIComponent(name)}`);
    const dl = el('dl');
    for (const [k, v] of [['serial', cert.serial], ['not before', cert.notBefore], ['expires', cert.notAfter], ['issuer', cert.issuer], ['SPIFFE ID', cert.spiffeId], ['x5t#S256', cert.thumbprint], ['DNS', cert.dns.join(', ')], ['IP', cert.ip.join(', ')]]) {
      dl.append(el('dt', {}, k), el('dd', { class: 'mono', 'data-field': k }, v));
    }
    box.replaceChildren(dl, list('grants in the certificate', cert.grants));
  } catch (err) {
    box.textContent = String(err.message);
  }
}

function matches(d) {
  const service = document.getElementById('filter-service').value;
  const outcome = document.getElementById('filter-outcome').value;
  const subject = document.getElementById('filter-subject').value.trim();
  return (service === '' || d.service === service) && (outcome === '' || (outcome === 'allow') === d.allow) && (subject === '' || (d.subject ?? '').includes(subject));
}

function checkTable(d) {
  const table = el('table', { class: 'check-table' });
  const head = el('tr');
  head.append(el('th', {}, 'check'), el('th', {}, 'outcome'), el('th', {}, 'detail'));
  table.append(head);
  const details = new Map(d.checkDetails.map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 2)]));
  // A refusal in the handler shares its decision id with the interceptor's line for checks 1-4.
  const earlier = state.decisions.find((o) => o !== d && o.decisionId === d.decisionId && o.service === d.service);
  for (const [check, outcome] of Object.entries({ ...earlier?.checks, ...d.checks })) {
    const tr = el('tr', { 'data-check': check });
    tr.append(el('td', {}, check), el('td', { class: outcome === 'fail' ? 'bad' : outcome === 'pass' ? 'ok' : '' }, outcome), el('td', {}, details.get(check) ?? ''));
    table.append(tr);
  }
  const info = el('p', { class: 'mono' }, `grpc ${d.grpcCode ?? '-'} ${d.errorCode ?? ''} · token ${d.tokenKind ?? '-'} · caller ${d.callerId ?? '-'}`);
  const frag = document.createDocumentFragment();
  frag.append(table, info, el('p', {}, `reason: ${d.reason}`));
  return frag;
}

function row(d) {
  const tr = el('tr', { class: d.allow ? 'allow' : 'deny', 'data-decision-id': d.decisionId });
  const cells = [
    [d.time.slice(11, 23), 'mono'],
    [d.allow ? 'allow' : d.dryRun ? 'deny (dry run)' : 'deny', 'outcome'],
    [d.service, ''],
    [d.method, 'mono'],
    [d.caller ?? '-', ''],
    [d.subject ?? '-', ''],
    [d.actorChain.join(' ← ') || '-', 'mono'],
    [d.failedCheck ?? '-', 'failed-check'],
    [d.reason, 'reason'],
    [d.decisionId, 'mono'],
  ];
  for (const [text, cls] of cells) tr.append(el('td', { class: cls }, text));
  if (!d.allow) {
    tr.addEventListener('click', () => {
      const next = tr.nextElementSibling;
      if (next && next.classList.contains('checks')) return next.remove();
      const expanded = el('tr', { class: 'checks' });
      const td = el('td', { colspan: 10 });
      td.append(checkTable(d));
      expanded.append(td);
      tr.after(expanded);
    });
  }
  return tr;
}

function renderDecisions() {
  const body = document.querySelector('#decisions tbody');
  body.replaceChildren(...state.decisions.filter(matches).slice(-MAX_ROWS).reverse().map(row));
}

function addDecision(d) {
  state.decisions.push(d);
  if (state.decisions.length > MAX_ROWS) state.decisions.shift();
  if (!matches(d)) return;
  const body = document.querySelector('#decisions tbody');
  body.prepend(row(d));
  while (body.children.length > MAX_ROWS) body.lastElementChild.remove();
}

function connect() {
  const status = document.getElementById('stream-state');
  const source = new EventSource('/api/decisions');
  source.addEventListener('open', () => {
    // Every (re)connection starts with the server's recent decisions: start the list over.
    state.decisions = [];
    renderDecisions();
    status.textContent = 'live';
  });
  source.addEventListener('decision', (ev) => addDecision(JSON.parse(ev.data)));
  source.addEventListener('counts', (ev) => {
    state.counts = JSON.parse(ev.data);
    drawGraph();
  });
  source.addEventListener('error', () => {
    status.textContent = 'reconnecting…';
    // A stream closed because the session ended answers 401 from now on: back to the login.
    fetch('/api/graph', { credentials: 'same-origin' }).then((r) => r.status === 401 && location.assign('/login?error=expired'), () => undefined);
  });
}

function show(view) {
  for (const tab of document.querySelectorAll('.tab')) tab.classList.toggle('active', tab.dataset.view === view);
  document.getElementById('view-graph').classList.toggle('hidden', view !== 'graph');
  document.getElementById('view-decisions').classList.toggle('hidden', view !== 'decisions');
}

async function main() {
  for (const tab of document.querySelectorAll('.tab')) tab.addEventListener('click', () => show(tab.dataset.view));
  for (const id of ['filter-service', 'filter-outcome', 'filter-subject']) document.getElementById(id).addEventListener('input', renderDecisions);
  state.graph = await getJson('/api/graph');
  document.getElementById('window').textContent = String(Math.round(state.graph.windowMs / 60000));
  const services = document.getElementById('filter-service');
  for (const n of state.graph.nodes) services.append(el('option', { value: n.name }, n.name));
  drawGraph();
  document.body.dataset.ready = 'true';
  connect();
}

main().catch((err) => {
  document.getElementById('details').textContent = `console failed to load: ${err.message}`;
});
