// Following decision logs: partial lines, truncation, rotation, over-long lines, and what a parsed line keeps.
import { appendFileSync, mkdtempSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { DecisionFeed, parseDecisionLine } from '../../scripts/console/decision-feed.ts';
import { LogTail } from '../../scripts/console/log-tail.ts';

describe('console log tail', () => {
  let dir: string;
  let file: string;
  let lines: string[];
  let tail: LogTail | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-tail-'));
    file = join(dir, 'svc.log');
    lines = [];
  });
  afterEach(() => {
    tail?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const follow = (opts = {}): LogTail => (tail = new LogTail(file, (l) => lines.push(l), { pollMs: 60_000, ...opts }));

  it('starts inside the backlog at a line boundary and holds a half-written line until it ends', () => {
    writeFileSync(file, `${'x'.repeat(50)}\nsecond\n`);
    follow({ backlogBytes: 10 });
    tail!.poll();
    expect(lines).to.deep.equal(['second']);
    appendFileSync(file, 'thi');
    tail!.poll();
    expect(lines).to.deep.equal(['second']);
    appendFileSync(file, 'rd\nfourth\n');
    tail!.poll();
    expect(lines).to.deep.equal(['second', 'third', 'fourth']);
  });

  it('starts over after truncation and follows a rotated file to its end, then the new one', () => {
    writeFileSync(file, 'one\n');
    follow();
    tail!.poll();
    truncateSync(file, 0);
    appendFileSync(file, 'two\n');
    tail!.poll();
    expect(lines).to.deep.equal(['one', 'two']);
    appendFileSync(file, 'three\n');
    renameSync(file, `${file}.1`);
    writeFileSync(file, 'four\n');
    tail!.poll();
    expect(lines).to.deep.equal(['one', 'two', 'three', 'four']);
    appendFileSync(`${file}.1`, 'late write to the old file\n');
    appendFileSync(file, 'five\n');
    tail!.poll();
    expect(lines).to.deep.equal(['one', 'two', 'three', 'four', 'five']);
  });

  it('waits for a file that does not exist yet, and drops a line over the limit whole', () => {
    follow({ maxLineBytes: 16 });
    tail!.poll();
    writeFileSync(file, `${'y'.repeat(10)}`);
    tail!.poll();
    appendFileSync(file, `${'y'.repeat(20)}\nshort\n`);
    tail!.poll();
    expect(lines).to.deep.equal(['short']);
  });

  it('parses decision lines only, keeping the named fields and never the token id', () => {
    const nameOf = (id: string): string | undefined => (id === 'spiffe://twokey.local/ns/twokey/sa/gateway' ? 'gateway' : undefined);
    const deny = JSON.stringify({
      level: 40, time: 1_700_000_000_000, event: 'authz.decision', decision_id: 'd1', method: '/p.S/M', allow: false, failed_check: 'scope',
      error_code: 'ERR_SCOPE_MISSING', grpc_code: 7, peer_spiffe_id: 'spiffe://twokey.local/ns/twokey/sa/gateway', subject: 'bob', token_kind: 'user',
      jti: 'secret-jti', checks: { peer: 'pass', scope: 'fail' }, check_details: ['scope: token lacks "x"'], reason: 'scope check failed', authorization: 'Bearer eyJ',
    });
    const d = parseDecisionLine(deny, 'image-store', nameOf)!;
    expect(d).to.include({ service: 'image-store', caller: 'gateway', decisionId: 'd1', allow: false, failedCheck: 'scope', subject: 'bob', reason: 'scope check failed', time: '2023-11-14T22:13:20.000Z' });
    expect(d.checks).to.deep.equal({ peer: 'pass', scope: 'fail' });
    expect(JSON.stringify(d)).to.not.include('secret-jti').and.not.include('Bearer');
    const resource = parseDecisionLine(JSON.stringify({ event: 'authz.resource_denied', decision_id: 'd2', method: '/p.S/M', allow: false, reason: 'resource check failed: x' }), 'image-store', nameOf)!;
    expect(resource).to.include({ failedCheck: 'resource', allow: false });
    expect(resource.checks).to.deep.equal({ resource: 'fail' });
    const dryRun = parseDecisionLine(JSON.stringify({ event: 'authz.decision', decision_id: 'd3', method: '/p.S/M', allow: true, would_deny: true, dry_run: true }), 's', nameOf)!;
    expect(dryRun).to.include({ allow: false, dryRun: true });
    for (const other of ['not json', '{"event":"server.started"}', '{"event":"authz.decision","method":"/p.S/M"}', '{broken']) expect(parseDecisionLine(other, 's', nameOf)).to.equal(undefined);
  });

  it('counts decisions per edge over the window and forgets them after it', () => {
    let now = 1_700_000_000_000;
    writeFileSync(file, '');
    const feed = new DecisionFeed({ logs: { 'image-store': file }, nameOf: (id) => id.split('/').pop(), clock: () => now, windowMs: 60_000, recent: 2, tail: { pollMs: 60_000 } });
    try {
      const line = (allow: boolean, peer = 'spiffe://twokey.local/ns/twokey/sa/gateway'): string =>
        `${JSON.stringify({ time: now, event: 'authz.decision', decision_id: `d${Math.random()}`, method: '/p.S/M', allow, peer_spiffe_id: peer })}\n`;
      const seen: boolean[] = [];
      feed.subscribe((d) => seen.push(d.allow));
      appendFileSync(file, line(true) + line(false) + line(true));
      feed.poll();
      expect(seen).to.deep.equal([true, false, true]);
      expect(feed.recent()).to.have.length(2);
      expect(feed.counts()).to.deep.equal([{ from: 'gateway', to: 'image-store', allowed: 2, denied: 1 }]);
      now += 120_000;
      expect(feed.counts()).to.deep.equal([]);
    } finally {
      feed.close();
    }
  });

  it("counts a replicated service's processes as the service", () => {
    const second = `${file}-2`;
    writeFileSync(file, '');
    writeFileSync(second, '');
    const feed = new DecisionFeed({
      logs: { 'image-store': file, 'image-store-2': second },
      serviceOf: (p) => p.replace(/-2$/, ''),
      nameOf: (id) => id.split('/').pop(),
      tail: { pollMs: 60_000 },
    });
    try {
      const line = `${JSON.stringify({ time: Date.now(), event: 'authz.decision', decision_id: 'd', method: '/p.S/M', allow: true, peer_spiffe_id: 'spiffe://twokey.local/ns/twokey/sa/gateway' })}\n`;
      appendFileSync(file, line);
      appendFileSync(second, line + line);
      feed.poll();
      expect(feed.counts()).to.deep.equal([{ from: 'gateway', to: 'image-store', allowed: 3, denied: 0 }]);
    } finally {
      feed.close();
    }
  });
});
