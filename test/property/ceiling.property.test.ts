// A partner workload's effective grants are exactly its certificate's grants intersected with our ceiling, whatever they are.
import { expect } from 'chai';
import fc from 'fast-check';
import { decide } from '../../services/authz/decision.ts';
import type { PeerIdentity } from '../../services/authz/types.ts';
import { Ceiling, FederationPolicy, PartnerPolicy, SpiffeIdPattern } from '../../services/authz/federation.ts';
import { GrantSet } from '../../services/authz/grant.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { RUNS } from './arbitraries.ts';

// A small alphabet of services and methods so random sets overlap often.
const services = ['a.v1.One', 'a.v1.Two', 'b.v1.Three'];
const methods = ['Get', 'List', 'Put', 'Delete'];
const grantArb = fc.oneof(
  fc.tuple(fc.constantFrom(...services), fc.constantFrom(...methods)).map(([s, m]) => `/${s}/${m}`),
  fc.constantFrom(...services).map((s) => `/${s}/*`),
);
const grantSetArb = fc.uniqueArray(grantArb, { maxLength: 8 });
const callArb = fc.oneof(
  fc.tuple(fc.constantFrom(...services), fc.constantFrom(...methods, 'Other')).map(([s, m]) => `/${s}/${m}`),
  fc.constantFrom(...services).map((s) => `/${s}/*`),
  fc.constantFrom('/a.v1.One', '/a.v1.OneX/Get', '/A.v1.One/Get', '/a.v1.One/get'),
);

/** The oracle, written from the grant rule alone: an exact entry equal to the call, or its service's wildcard. */
function naiveAllows(grants: readonly string[], call: string): boolean {
  const parts = call.split('/');
  if (parts.length !== 3 || parts[0] !== '' || parts[2] === '*') return false;
  return grants.includes(call) || grants.includes(`/${parts[1]}/*`);
}

const PARTNER = 'partner.example';
const OURS = 'twokey.local';
const peerId = SpiffeId.parse(`spiffe://${PARTNER}/ns/reports/sa/exporter`);

function partnerPeer(grants: readonly string[]): PeerIdentity {
  return {
    spiffeId: peerId,
    serialHex: '01',
    grants: GrantSet.parse(grants),
    notBefore: new Date(0),
    notAfter: new Date(8.64e15),
    thumbprint: 'x'.repeat(43),
    verifiedTrustDomain: PARTNER,
  };
}

describe('property: partner ceilings', () => {
  it('GrantSet.intersect allows exactly what both sets allow (naive oracle)', () => {
    fc.assert(
      fc.property(grantSetArb, grantSetArb, fc.array(callArb, { minLength: 1, maxLength: 12 }), (certificate, ceiling, calls) => {
        const effective = GrantSet.parse(certificate).intersect(GrantSet.parse(ceiling));
        for (const call of calls) {
          expect(effective.allows(call), `${call} with ${JSON.stringify({ certificate, ceiling })}`).to.equal(naiveAllows(certificate, call) && naiveAllows(ceiling, call));
        }
        // And it names nothing beyond the ceiling: every effective entry is allowed by both (as a call, or as a service wildcard held by both).
        for (const g of effective.toStrings()) {
          if (g.endsWith('/*')) expect(ceiling.includes(g) && certificate.includes(g), g).to.equal(true);
          else expect(naiveAllows(certificate, g) && naiveAllows(ceiling, g), g).to.equal(true);
        }
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it("decide() lets a partner's certificate-only call through exactly when certificate and ceiling both allow it, else denies naming the check", () => {
    fc.assert(
      fc.property(grantSetArb, grantSetArb, callArb, (certificate, ceilingMethods, call) => {
        const ceiling = new Ceiling({ workloads: SpiffeIdPattern.parse(`spiffe://${PARTNER}/ns/reports/sa/*`), methods: GrantSet.parse(ceilingMethods) });
        const federation = new FederationPolicy(OURS, [new PartnerPolicy(PARTNER, { kind: 'file', path: '/dev/null' }, [ceiling])]);
        const d = decide({
          peer: { ok: true, identity: partnerPeer(certificate) },
          method: call,
          rule: { certificateOnly: true },
          now: 1000,
          trustDomain: OURS,
          federation,
        });
        const expected = naiveAllows(certificate, call) && naiveAllows(ceilingMethods, call);
        expect(d.allow, `${call} with ${JSON.stringify({ certificate, ceilingMethods })}`).to.equal(expected);
        if (!expected) {
          expect(d.failedCheck).to.equal('grant');
          expect(d.errorCode).to.equal(naiveAllows(certificate, call) ? 'ERR_CEILING_EXCEEDED' : 'ERR_METHOD_NOT_GRANTED');
        } else {
          expect(d.ceiling).to.deep.equal({ trustDomain: PARTNER, workloads: `spiffe://${PARTNER}/ns/reports/sa/*` });
        }
      }),
      { numRuns: RUNS * 2 },
    );
  });
});
