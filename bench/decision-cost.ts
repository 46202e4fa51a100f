// Decision cost against the number of grants, measured in-process on twokey's own functions: the
// peer certificate's parse (once per connection) and decide() (once per call). It reaches 10,000
// grants, which no TLS connection can carry (see pki.ts), and being pure CPU work it is far less
// disturbed by other load on the machine than the end-to-end scenarios.
import fs from 'node:fs';
import path from 'node:path';
import { decide } from '../services/authz/decision.ts';
import type { VerifiedToken } from '../services/authz/types.ts';
import { parseSvid } from '../services/authz/svid.ts';
import { ECHO_METHOD } from './echo-service.ts';

export interface DecisionCost {
  grants: number;
  /** parseSvid of the DER certificate: paid once per connection. */
  parseMicros: number;
  /** decide() for an allowed call with a verified token: paid on every call. */
  decideNanos: number;
}

const REPETITIONS = 5;
const DECISIONS = 20_000;
const PARSES = 20;

function certificateDer(dir: string): Buffer {
  const pem = fs.readFileSync(path.join(dir, 'svid.pem'), 'utf8');
  const body = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem)?.[1];
  if (body === undefined) throw new Error(`no certificate in ${dir}`);
  return Buffer.from(body.replace(/\s+/g, ''), 'base64');
}

/** The least disturbed of several repetitions of each measurement, interleaved across certificates. */
export function measureDecisionCost(certificates: ReadonlyArray<{ grants: number; dir: string }>, trustDomain: string): DecisionCost[] {
  const now = Date.now();
  const token: VerifiedToken = {
    kind: 'user',
    subject: 'alice',
    issuer: 'https://auth.twokey.local',
    audience: `spiffe://${trustDomain}`,
    jti: 'bench-decision-cost-jti',
    scopes: new Set(['bench:echo']),
    actorChain: [],
    boundThumbprint: undefined,
    clientId: undefined,
    validFromMs: now - 60_000,
    validUntilMs: now + 3_600_000,
  };
  const ders = certificates.map((c) => certificateDer(c.dir));
  const best = certificates.map((c) => ({ grants: c.grants, parseMicros: Infinity, decideNanos: Infinity }));
  const inputs = ders.map((der) => ({
    peer: { ok: true as const, identity: parseSvid(der) },
    token: { ok: true as const, token, raw: 'unused' },
    method: ECHO_METHOD,
    rule: { permission: 'bench:echo' },
    now,
    trustDomain,
  }));
  // Decisions first and parses after: the garbage of a 10,000-grant parse would otherwise be
  // collected inside the next timed decision loop.
  for (let rep = 0; rep < REPETITIONS; rep += 1) {
    inputs.forEach((input, i) => {
      const started = performance.now();
      let allowed = 0;
      for (let n = 0; n < DECISIONS; n += 1) if (decide(input).allow) allowed += 1;
      best[i]!.decideNanos = Math.min(best[i]!.decideNanos, ((performance.now() - started) * 1e6) / DECISIONS);
      if (allowed !== DECISIONS) throw new Error(`decide() denied the benchmark call with ${certificates[i]!.grants} grants`);
    });
  }
  for (let rep = 0; rep < REPETITIONS; rep += 1) {
    ders.forEach((der, i) => {
      const started = performance.now();
      for (let n = 0; n < PARSES; n += 1) parseSvid(der);
      best[i]!.parseMicros = Math.min(best[i]!.parseMicros, ((performance.now() - started) * 1000) / PARSES);
    });
  }
  return best;
}
