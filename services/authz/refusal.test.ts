// Refusals inside handlers: the status, the line under the call's decision id, and the count.
import { Writable } from 'node:stream';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { pino } from 'pino';
import { ServedCall, runInCall } from './call-context.ts';
import type { PeerIdentity, VerifiedToken } from './types.ts';
import { TwokeyError } from './errors.ts';
import { GrantSet } from './grant.ts';
import { checkOwner, refuse } from './refusal.ts';
import { SpiffeId } from './spiffe-id.ts';

const DECISION = '0b1c8e64-0000-4000-8000-000000000001';
const METHOD = '/acme.notes.v1.Notes/GetNote';
const PEER: PeerIdentity = {
  spiffeId: SpiffeId.parse('spiffe://acme.test/ns/acme/sa/web'),
  serialHex: '0a1b',
  grants: GrantSet.parse([METHOD]),
  notBefore: new Date(0),
  notAfter: new Date(Date.now() + 3600_000),
  thumbprint: 'A'.repeat(43),
};

function tokenOf(subject: string, scopes: string[]): VerifiedToken {
  return { kind: 'user', subject, issuer: 'https://auth.acme.test', audience: 'spiffe://acme.test', jti: 'j'.repeat(22), scopes: new Set(scopes), actorChain: [], validUntilMs: Date.now() + 60_000 } as unknown as VerifiedToken;
}

/** A served call whose server logs to `lines` and counts refusals in `counted`. */
function served(token: VerifiedToken | undefined, lines: Record<string, unknown>[], counted: string[]): ServedCall {
  const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(JSON.parse(chunk.toString())), done()) });
  const logger = pino({ base: null, timestamp: false }, sink);
  const metrics = { recordRefusal: (method: string, _peer: PeerIdentity | undefined, code: string) => void counted.push(`${method} ${code}`) };
  return new ServedCall(DECISION, METHOD, PEER, token, undefined, DECISION, { traceId: '1'.repeat(32), spanId: '2'.repeat(16), flags: '01' }, metrics, logger);
}

describe('refusals inside handlers (refuse, checkOwner)', () => {
  it("checkOwner allows the owner, and refuses another's resource and a missing one alike: PERMISSION_DENIED, logged and counted under the decision id", async () => {
    const lines: Record<string, unknown>[] = [];
    const counted: string[] = [];
    const alice = tokenOf('alice', ['notes:read']);
    runInCall(served(alice, lines, counted), () => {
      expect(checkOwner('notes:read', 'alice')).to.equal(null);
      for (const owner of ['bob', undefined]) {
        const refused = checkOwner('notes:read', owner)!;
        expect(refused.code).to.equal(status.PERMISSION_DENIED);
        expect(refused.details).to.equal(`resource check failed: "notes:read" on this resource needs its owner or the "notes:read:any" scope (decision ${DECISION})`);
      }
    });
    await new Promise((r) => setImmediate(r));
    expect(lines).to.have.length(2);
    expect(lines[0]).to.deep.include({ event: 'authz.resource_denied', decision_id: DECISION, method: METHOD, allow: false, error_code: 'ERR_RESOURCE_FORBIDDEN', grpc_code: status.PERMISSION_DENIED, subject: 'alice', peer_spiffe_id: 'spiffe://acme.test/ns/acme/sa/web' });
    expect(lines[1]).to.deep.equal(lines[0]);
    expect(counted).to.deep.equal([`${METHOD} ERR_RESOURCE_FORBIDDEN`, `${METHOD} ERR_RESOURCE_FORBIDDEN`]);
    // The :any scope reaches every owner's resources.
    runInCall(served(tokenOf('carol', ['notes:read:any']), [], []), () => expect(checkOwner('notes:read', 'bob')).to.equal(null));
  });

  it('refuse() keeps a TwokeyError\'s code and message (call.refused), passes an upstream status through, and hides anything else as INTERNAL', async () => {
    const lines: Record<string, unknown>[] = [];
    const counted: string[] = [];
    runInCall(served(tokenOf('alice', ['notes:read']), lines, counted), () => {
      expect(refuse(new TwokeyError('ERR_REQUEST_INVALID', 'a note holds at most 1000 characters'))).to.deep.include({
        code: status.INVALID_ARGUMENT,
        details: `a note holds at most 1000 characters (decision ${DECISION})`,
      });
      expect(refuse({ code: status.NOT_FOUND, details: 'upstream said so' })).to.deep.include({ code: status.NOT_FOUND, details: 'upstream said so' });
      expect(refuse(new Error('secret table name'))).to.deep.include({ code: status.INTERNAL, details: `internal error (decision ${DECISION})` });
    });
    await new Promise((r) => setImmediate(r));
    expect(lines.map((l) => l['event'] ?? l['msg'])).to.deep.equal(['call.refused', 'handler failed']);
    expect(lines[0]).to.deep.include({ decision_id: DECISION, error_code: 'ERR_REQUEST_INVALID', grpc_code: status.INVALID_ARGUMENT });
    expect(counted).to.deep.equal([`${METHOD} ERR_REQUEST_INVALID`]);
  });

  it('fails closed outside a call: checkOwner refuses (no token), with no decision id to name', () => {
    const refused = checkOwner('notes:read', 'alice')!;
    expect(refused.code).to.equal(status.PERMISSION_DENIED);
    expect(refused.details).to.not.contain('decision');
  });
});
