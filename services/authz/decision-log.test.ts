// The decision log: an allowed call's hand-built line is the line pino writes for the same decision.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { expect } from 'chai';
import { pino, type Logger, type LoggerOptions } from 'pino';
import { DecisionLog, decisionFields, type DecisionEvent } from './decision-log.ts';
import { decide, decidePeer } from './decision.ts';
import type { Decision, DecisionInput, PeerIdentity, TokenKind, VerifiedToken } from './types.ts';
import { GrantSet } from './grant.ts';
import { SpiffeId } from './spiffe-id.ts';
import { createLogger } from '../mesh-runtime/logger.ts';

const TD = 'twokey.local';
const NOW = Date.parse('2026-01-01T12:00:00Z');
const METHOD = '/twokey.images.v1.ImageStore/SetTags';
const LOGIN = '/twokey.auth.v1.Auth/Login';
const PEER_ID = 'spiffe://twokey.local/ns/twokey/sa/tagging';
const THUMB = 'A'.repeat(43);

function peer(serialHex = '0a1b'): PeerIdentity {
  return {
    spiffeId: SpiffeId.parse(PEER_ID),
    serialHex,
    grants: GrantSet.parse([METHOD, LOGIN]),
    notBefore: new Date(NOW - 3600_000),
    notAfter: new Date(NOW + 3600_000),
    thumbprint: THUMB,
  };
}

function token(kind: TokenKind, subject: string, jti: string): VerifiedToken {
  return {
    kind,
    subject,
    issuer: 'https://auth.twokey.local',
    audience: 'spiffe://twokey.local',
    jti,
    scopes: new Set(['images:tag']),
    actorChain: kind === 'delegated' ? [PEER_ID, 'spiffe://twokey.local/ns/twokey/sa/gateway'] : [],
    boundThumbprint: kind === 'user' ? undefined : THUMB,
    clientId: undefined,
    validFromMs: NOW - 60_000,
    validUntilMs: NOW + 60_000,
  };
}

function decided(identity: PeerIdentity, over: Partial<DecisionInput> = {}): Decision {
  const input: DecisionInput = {
    peer: { ok: true, identity },
    token: { ok: true, token: token('user', 'alice', 'jti-0123456789abcdef'), raw: 'x' },
    method: METHOD,
    rule: { permission: 'images:tag' },
    now: NOW,
    trustDomain: TD,
    ...over,
  };
  return 'certificateOnly' in input.rule! ? decidePeer(input)! : decide(input);
}

function event(identity: PeerIdentity, decision: Decision, over: Partial<DecisionEvent> = {}): DecisionEvent {
  return { decisionId: '3f0c2a4e-0000-4000-8000-000000000001', method: decision.allow && decision.token === undefined ? LOGIN : METHOD, peer: identity, decision, enforced: true, latencyUs: 41.6, requestId: '3f0c2a4e-0000-4000-8000-000000000001', ...over };
}

/** Every allowed shape a line can take: token kinds, request ids, certificate-only, escaping. */
function allowedEvents(): DecisionEvent[] {
  const p = peer();
  const odd = peer('00ff"\\');
  const user = decided(p);
  const delegated = decided(p, { token: { ok: true, token: token('delegated', 'b"ob\\ \u00e9\u4e2d\n\t\u0001', 'jti-delegated-0123456789'), raw: 'x' } });
  const service = decided(p, { token: { ok: true, token: { ...token('service', PEER_ID, 'jti-service-0123456789ab'), actorChain: [] }, raw: 'x' } });
  const login = decided(p, { method: LOGIN, rule: { certificateOnly: true } });
  const events = [
    event(p, user),
    event(p, user, { requestId: 'req "quoted" \\ \u2028 \u00ff', latencyUs: 0.4 }),
    event(p, user, { requestId: undefined, latencyUs: 1234567.5 }),
    event(p, delegated, { decisionId: 'd-2' }),
    event(p, service),
    event(p, login),
    event(odd, user),
    event(undefined as unknown as PeerIdentity, user, { peer: undefined }),
  ];
  for (const e of events) expect(e.decision.allow, e.decisionId).to.equal(true);
  // Written twice: the second pass reuses what the first stringified per peer, method and token.
  return [...events, ...events];
}

function capture(options: LoggerOptions = {}): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  return { logger: pino({ level: 'info', timestamp: () => ',"time":"fixed"', ...options }, stream), lines };
}

/** What pino itself writes for an event: the path denials take. */
function viaPino(logger: Logger, e: DecisionEvent): void {
  logger.info(decisionFields(e), 'authz allow');
}

const flush = () => new Promise((r) => setImmediate(r));

describe('DecisionLog', () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'twokey-decision-log-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("writes an allowed decision's line with the bytes pino writes for it, on the services' own logger", () => {
    const fast = join(dir, 'fast.log');
    const slow = join(dir, 'slow.log');
    const fastLogger = createLogger('image-store', { dest: fast, sync: true });
    const slowLogger = createLogger('image-store', { dest: slow, sync: true });
    // The fast path must really be taken: pino's info() is not called for an allowed decision.
    fastLogger.info = () => {
      throw new Error('pino info() called for an allowed decision');
    };
    const log = new DecisionLog(fastLogger);
    const events = allowedEvents();
    for (const e of events) {
      log.write(e);
      viaPino(slowLogger, e);
    }
    const withoutTime = (line: string) => line.replace(/,"time":"[^"]+",/, ',"time":"T",');
    const fastLines = readFileSync(fast, 'utf8').split('\n');
    const slowLines = readFileSync(slow, 'utf8').split('\n');
    expect(fastLines).to.have.length(events.length + 1);
    expect(fastLines.map(withoutTime)).to.deep.equal(slowLines.map(withoutTime));
    for (const [i, line] of fastLines.slice(0, -1).entries()) {
      const { time, ...fields } = JSON.parse(line);
      const { time: slowTime, ...slowFields } = JSON.parse(slowLines[i]!);
      expect(Date.parse(time)).to.be.within(Date.parse(slowTime) - 1000, Date.parse(slowTime) + 1000);
      expect(fields).to.deep.equal(slowFields);
      expect(fields).to.include({ level: 30, service: 'image-store', pid: process.pid, msg: 'authz allow', event: 'authz.decision', allow: true });
    }
    const delegated = JSON.parse(fastLines[3]!);
    expect(delegated).to.include({ subject: 'b"ob\\ \u00e9\u4e2d\n\t\u0001', token_kind: 'delegated', jti: 'jti-delegated-0123456789', latency_us: 42 });
    expect(delegated.actor_chain).to.deep.equal([PEER_ID, 'spiffe://twokey.local/ns/twokey/sa/gateway']);
    expect(delegated.checks).to.deep.equal({ peer: 'pass', rule: 'pass', grant: 'pass', token: 'pass', revocation: 'pass', binding: 'pass', scope: 'pass' });
    expect(JSON.parse(fastLines[5]!).checks).to.deep.equal({ peer: 'pass', rule: 'pass', grant: 'pass', token: 'skip', revocation: 'skip', binding: 'skip', scope: 'skip' });
  });

  it("keeps a child logger's bindings and honours its level", async () => {
    const fast = capture();
    const slow = capture();
    const log = new DecisionLog(fast.logger.child({ component: 'authz "x"' }));
    for (const e of allowedEvents()) {
      log.write(e);
      viaPino(slow.logger.child({ component: 'authz "x"' }), e);
    }
    await flush();
    expect(fast.lines).to.have.length(16);
    expect(fast.lines).to.deep.equal(slow.lines);

    const quiet = capture({ level: 'warn' });
    new DecisionLog(quiet.logger).write(allowedEvents()[0]!);
    quiet.logger.level = 'info';
    const later = new DecisionLog(quiet.logger);
    quiet.logger.level = 'warn';
    later.write(allowedEvents()[0]!);
    await flush();
    expect(quiet.lines).to.deep.equal([]);
  });

  it('leaves lines to pino when the logger changes them (redaction, mixin, serializers)', async () => {
    const options: LoggerOptions[] = [
      { redact: ['jti'] },
      { mixin: () => ({ zone: 'eu' }) },
      { serializers: { subject: (s: string) => s.toUpperCase() } },
      { formatters: { log: (o: Record<string, unknown>) => ({ ...o, formatted: true }) } },
      { messageKey: 'message' },
    ];
    for (const option of options) {
      const fast = capture(option);
      const slow = capture(option);
      const log = new DecisionLog(fast.logger);
      for (const e of allowedEvents()) {
        log.write(e);
        viaPino(slow.logger, e);
      }
      await flush();
      expect(fast.lines, JSON.stringify(Object.keys(option))).to.deep.equal(slow.lines).and.to.have.length(16);
    }
    const redacted = capture({ redact: ['jti'] });
    new DecisionLog(redacted.logger).write(allowedEvents()[0]!);
    await flush();
    expect(JSON.parse(redacted.lines[0]!).jti).to.equal('[Redacted]');
  });

  it('writes denials through pino, with their details', async () => {
    const out = capture();
    const p = peer();
    const denied = decided(p, { rule: { permission: 'images:delete' } });
    new DecisionLog(out.logger).write(event(p, denied));
    await flush();
    const line = JSON.parse(out.lines[0]!);
    expect(line).to.include({ level: 40, msg: 'authz deny', allow: false, failed_check: 'scope', error_code: 'ERR_SCOPE_MISSING' });
    expect(line.check_details).to.have.length(7);
  });
});

describe('DecisionLog: denials folded per peer and reason', () => {
  it('writes allows always and the first denials of each window; the rest are counted in one summary line, none dropped', async () => {
    let clock = NOW;
    const { logger, lines } = capture();
    const log = new DecisionLog(logger, { folding: { windowMs: 10_000, linesPerWindow: 3, maxKeys: 100 }, clock: () => clock });
    const p = peer();
    const noScope = decided(p, { rule: { permission: 'images:delete' } });
    const expired = decided(p, { now: NOW + 7200_000 });
    expect(noScope.allow).to.equal(false);
    for (let i = 0; i < 50; i++) log.write(event(p, noScope, { decisionId: `deny-${i}` }));
    for (let i = 0; i < 2; i++) log.write(event(p, expired, { decisionId: `expired-${i}` }));
    for (let i = 0; i < 5; i++) log.write(event(p, decided(p), { decisionId: `allow-${i}` }));
    await flush();
    const parsed = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(parsed().filter((l) => l['allow'] === false).map((l) => l['decision_id'])).to.deep.equal(['deny-0', 'deny-1', 'deny-2', 'expired-0', 'expired-1']);
    expect(parsed().filter((l) => l['allow'] === true)).to.have.length(5);
    expect(parsed().filter((l) => l['event'] === 'authz.decision.folded')).to.deep.equal([]);
    // The window ends: the next denial of that kind is written, after the summary of the last window.
    clock += 10_000;
    log.write(event(p, noScope, { decisionId: 'deny-next' }));
    await flush();
    const folded = parsed().filter((l) => l['event'] === 'authz.decision.folded');
    expect(folded).to.have.length(1);
    expect(folded[0]).to.include({ folded: 47, peer_spiffe_id: PEER_ID, failed_check: 'scope', error_code: 'ERR_SCOPE_MISSING', window_ms: 10_000 });
    expect(parsed().at(-1)).to.include({ decision_id: 'deny-next' });
    // Closing writes the summaries still open.
    for (let i = 0; i < 5; i++) log.write(event(p, noScope, { decisionId: `late-${i}` }));
    log.close();
    await flush();
    expect(parsed().filter((l) => l['event'] === 'authz.decision.folded').map((l) => l['folded'])).to.deep.equal([47, 3]);
  });

  it('calls shed by a load limit are folded per peer and limit the same way', async () => {
    const { logger, lines } = capture();
    const log = new DecisionLog(logger, { folding: { windowMs: 10_000, linesPerWindow: 2, maxKeys: 100 }, clock: () => NOW });
    for (let i = 0; i < 10; i++) log.shed({ method: METHOD, peer: peer(), limit: 'in_flight_per_peer', reason: 'overloaded', requestId: `r${i}` });
    log.close();
    await flush();
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(parsed.filter((l) => l['event'] === 'authz.shed').map((l) => l['request_id'])).to.deep.equal(['r0', 'r1']);
    expect(parsed.filter((l) => l['event'] === 'authz.decision.folded').map((l) => [l['limit'], l['folded']])).to.deep.equal([['in_flight_per_peer', 8]]);
  });
});
