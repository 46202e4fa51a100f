// SpiffeId.parse against an independent reading of the SPIFFE ID specification, on valid and hostile input.
import { expect } from 'chai';
import fc from 'fast-check';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { RUNS, TRICKY_CHARS, mutated, spiffeIdText, trustDomain, pathSegment, typedOutcome } from './arbitraries.ts';

/**
 * The specification's rules (SPIFFE ID §2), written character by character so the parser is
 * checked against a second implementation rather than against itself.
 */
function specAllows(input: string): boolean {
  if (input.length === 0 || input.length > 2048 || !input.startsWith('spiffe://')) return false;
  const rest = input.slice('spiffe://'.length);
  const cut = rest.indexOf('/');
  const td = cut === -1 ? rest : rest.slice(0, cut);
  if (td.length === 0 || td.length > 255) return false;
  for (const ch of td) {
    const ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch === '.' || ch === '-' || ch === '_';
    if (!ok) return false;
  }
  if (cut === -1) return true;
  const segments = rest.slice(cut + 1).split('/');
  for (const seg of segments) {
    if (seg.length === 0 || seg === '.' || seg === '..') return false;
    for (const ch of seg) {
      const ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch === '.' || ch === '-' || ch === '_';
      if (!ok) return false;
    }
  }
  return true;
}

const anyText = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.string({ maxLength: 40 }).map((s) => `spiffe://${s}`),
  mutated(spiffeIdText),
  mutated(mutated(spiffeIdText)),
);

describe('property: SpiffeId.parse', () => {
  it('accepts exactly what the specification allows, and throws only ERR_SPIFFE_ID_INVALID', () => {
    fc.assert(
      fc.property(anyText, (input) => {
        const out = typedOutcome(() => SpiffeId.parse(input), ['ERR_SPIFFE_ID_INVALID']);
        expect(out.ok, JSON.stringify(input)).to.equal(specAllows(input));
      }),
      { numRuns: RUNS * 4 },
    );
  });

  it('round-trips every valid ID unchanged (no normalization that could alias two IDs)', () => {
    fc.assert(
      fc.property(spiffeIdText, (text) => {
        const id = SpiffeId.parse(text);
        expect(id.toString()).to.equal(text);
        expect(SpiffeId.parse(id.toString()).equals(id)).to.equal(true);
        expect(`spiffe://${id.trustDomain}${id.path}`).to.equal(text);
      }),
      { numRuns: RUNS },
    );
  });

  it('two IDs are equal exactly when their texts are (case and dots matter)', () => {
    fc.assert(
      fc.property(spiffeIdText, mutated(spiffeIdText, ['A', 'a', '.', '-', '_', '/x']), (a, b) => {
        const idA = SpiffeId.parse(a);
        const outB = typedOutcome(() => SpiffeId.parse(b), ['ERR_SPIFFE_ID_INVALID']);
        if (outB.ok) expect(idA.equals(outB.value)).to.equal(a === b);
      }),
      { numRuns: RUNS },
    );
  });

  it('never accepts a non-string', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer(), fc.constant(null), fc.constant(undefined), fc.object(), fc.array(fc.string())), (value) => {
        const out = typedOutcome(() => SpiffeId.parse(value), ['ERR_SPIFFE_ID_INVALID']);
        expect(out.ok).to.equal(false);
      }),
      { numRuns: RUNS },
    );
  });

  it('forServiceAccount yields /ns/NS/sa/SA with exactly four segments exactly when each part is one valid segment, or refuses', () => {
    const part = fc.oneof(pathSegment, mutated(pathSegment, ['/', '..', '.', '%2F', '', ' ']));
    // Which branch each generated case took: a property that refused everything would pass a check of accepted results alone.
    const took = { accepted: 0, refused: 0, slashTheSpecWouldAllow: 0 };
    fc.assert(
      fc.property(trustDomain, part, part, (td, ns, sa) => {
        const out = typedOutcome(() => SpiffeId.forServiceAccount(td, ns, sa), ['ERR_SPIFFE_ID_INVALID']);
        // The oracle: the specification's reading of the whole ID, and each part a single segment
        // (a namespace "a/sa/b" makes a valid ID, but another workload's).
        const text = `spiffe://${td}/ns/${ns}/sa/${sa}`;
        const slash = ns.includes('/') || sa.includes('/');
        const expected = !slash && specAllows(text);
        expect(out.ok, JSON.stringify([td, ns, sa])).to.equal(expected);
        if (slash && specAllows(text)) took.slashTheSpecWouldAllow += 1;
        if (!out.ok) {
          took.refused += 1;
          return;
        }
        took.accepted += 1;
        expect(out.value.trustDomain).to.equal(td);
        expect(out.value.path).to.equal(`/ns/${ns}/sa/${sa}`);
        expect(out.value.path.split('/')).to.have.length(5);
      }),
      { numRuns: RUNS },
    );
    expect(took.accepted, 'cases accepted').to.be.greaterThan(0);
    expect(took.refused, 'cases refused').to.be.greaterThan(0);
    expect(took.slashTheSpecWouldAllow, 'cases where only the single-segment rule refuses').to.be.greaterThan(0);
  });

  it('a trusted ID with any tricky character inserted into its trust domain is refused', () => {
    fc.assert(
      fc.property(trustDomain, fc.constantFrom(...TRICKY_CHARS.filter((c) => c !== '.')), fc.nat(), (td, c, n) => {
        const i = n % (td.length + 1);
        const hostile = `spiffe://${td.slice(0, i)}${c}${td.slice(i)}/ns/a/sa/b`;
        // '/' just moves the cut: the result is a different, shorter trust domain, which is fine.
        if (c === '/' || c === '..') return;
        expect(typedOutcome(() => SpiffeId.parse(hostile), ['ERR_SPIFFE_ID_INVALID']).ok, hostile).to.equal(false);
      }),
      { numRuns: RUNS },
    );
  });
});
