import fs from 'node:fs';
import SonicBoom from 'sonic-boom';
const mode = process.argv[2];
const line = JSON.stringify({ level: 30, time: '2026-12-03T15:00:00.000Z', service: 'x', pid: 1, event: 'authz.decision', decision_id: '3f1c0d2e-8b1a-4c55-9a8e-1d2f3a4b5c6d', method: '/bench.Echo/Echo', allow: true, peer_spiffe_id: 'spiffe://example.org/ns/default/sa/client', subject: 'alice', jti: 'abcdefabcdefabcdef', checks: { peer: 'pass', method: 'pass', token: 'pass', scope: 'pass' }, reason: 'allowed', latency_us: 12, msg: 'authz allow' }) + '\n';
let write, done;
if (mode === 'async' || mode === 'sync') {
  const s = new SonicBoom({ fd: 1, sync: mode === 'sync', minLength: 0, maxWrite: 4096 });
  write = (l) => s.write(l); done = () => s.flushSync();
} else {
  let pending = [], writing = false, scheduled = false;
  const out = () => { scheduled = false; if (writing || pending.length === 0) return; const buf = Buffer.from(pending.join('')); pending = []; writing = true;
    fs.write(1, buf, (err) => { writing = false; if (pending.length) out(); }); };
  write = (l) => { pending.push(l); if (!scheduled) { scheduled = true; setImmediate(out); } };
  done = () => { if (pending.length) fs.writeSync(1, pending.join('')); };
}
const N = 200000, BATCH = Number(process.argv[3] ?? 4);
let i = 0; const t0 = process.cpuUsage(); const w0 = performance.now();
await new Promise((res) => { const step = () => { for (let k = 0; k < BATCH; k++) write(line.replace('abcdef', 'abcdeg')); i += BATCH; if (i < N) setImmediate(step); else res(); }; step(); });
const u = process.cpuUsage(t0); done();
process.stderr.write(`${mode} batch ${BATCH}: ${((u.user + u.system) / N).toFixed(2)} us cpu/line, ${((performance.now() - w0) * 1000 / N).toFixed(2)} us wall/line\n`);
