// MethodGrant/GrantSet: only exact paths and whole-service wildcards parse, and allows() matches nothing else.
import { expect } from 'chai';
import fc from 'fast-check';
import { GrantSet, MethodGrant } from '../../services/authz/grant.ts';
import { RUNS, grantText, identifier, mutated, serviceName, typedOutcome } from './arbitraries.ts';

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The grant grammar of DESIGN.md, checked by splitting rather than by the parser's regex. */
function specGrant(text: string): { service: string; method: string } | null {
  if (text.length > 512 || !text.startsWith('/')) return null;
  const parts = text.slice(1).split('/');
  if (parts.length !== 2) return null;
  const [service, method] = parts as [string, string];
  const names = service.split('.');
  if (names.length < 2 || !names.every((n) => IDENT.test(n))) return null;
  if (method !== '*' && !IDENT.test(method)) return null;
  return { service, method };
}

/** Whether a call path is granted: an exact grant equal to it, or a wildcard on its service. */
function specAllows(grants: readonly string[], path: string): boolean {
  const p = specGrant(path);
  // A literal '*' in a call path is never a method name, even when it spells a grant.
  if (p !== null && p.method === '*') return false;
  if (grants.includes(path)) return true;
  if (p === null) return false;
  return grants.some((g) => g === `/${p.service}/*`);
}

// Variations of a granted path that must not match unless they are literally granted.
const PATH_TRICKS = ['/', '//', '..', '/..', '.', ' ', '\t', '?x=1', '#', '%2F', '*', 'X', 'x', '\u0130', '\u212a', '\0'];

describe('property: method grants', () => {
  it('MethodGrant.parse accepts exactly the grant grammar, unchanged, and throws only ERR_GRANT_INVALID', () => {
    const input = fc.oneof(grantText, mutated(grantText, PATH_TRICKS), fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }));
    fc.assert(
      fc.property(input, (text) => {
        const out = typedOutcome(() => MethodGrant.parse(text), ['ERR_GRANT_INVALID']);
        const spec = specGrant(text);
        expect(out.ok, JSON.stringify(text)).to.equal(spec !== null);
        if (out.ok && spec) {
          expect(out.value.text).to.equal(text);
          expect(out.value.service).to.equal(spec.service);
          expect(out.value.method).to.equal(spec.method);
        }
      }),
      { numRuns: RUNS * 4 },
    );
  });

  it('GrantSet.parse refuses duplicates and any bad member, and keeps the order it was given', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(grantText, mutated(grantText, PATH_TRICKS)), { maxLength: 6 }), (texts) => {
        const out = typedOutcome(() => GrantSet.parse(texts), ['ERR_GRANT_INVALID']);
        const valid = texts.every((t) => specGrant(t) !== null) && new Set(texts).size === texts.length;
        expect(out.ok, JSON.stringify(texts)).to.equal(valid);
        if (out.ok) expect(out.value.toStrings()).to.deep.equal(texts);
      }),
      { numRuns: RUNS },
    );
  });

  it('allows() agrees with the specification on granted paths and every trick played on them', () => {
    const grants = fc.uniqueArray(grantText, { minLength: 1, maxLength: 5 });
    fc.assert(
      fc.property(grants, fc.nat(), fc.constantFrom(...PATH_TRICKS), fc.nat(), identifier, (texts, pick, trick, at, other) => {
        const set = GrantSet.parse(texts);
        const chosen = texts[pick % texts.length]!;
        const concrete = chosen.endsWith('/*') ? `${chosen.slice(0, -1)}${other}` : chosen;
        const i = at % (concrete.length + 1);
        const candidates = [
          concrete,
          chosen,
          concrete.toUpperCase(),
          concrete.toLowerCase(),
          `${concrete}${trick}`,
          `${trick}${concrete}`,
          `${concrete.slice(0, i)}${trick}${concrete.slice(i)}`,
          concrete.slice(0, i),
          concrete.replace(/\/([^/]*)$/, `/${trick}/$1`),
        ];
        for (const path of candidates) {
          expect(set.allows(path), `${JSON.stringify(path)} against ${JSON.stringify(texts)}`).to.equal(specAllows(texts, path));
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('a wildcard grant covers every method of its service and nothing of any other service', () => {
    fc.assert(
      fc.property(serviceName, serviceName, identifier, (service, other, method) => {
        const set = GrantSet.parse([`/${service}/*`]);
        expect(set.allows(`/${service}/${method}`)).to.equal(true);
        expect(set.allows(`/${other}/${method}`)).to.equal(other === service);
        expect(set.allows(`/${service}/*`)).to.equal(false);
        expect(set.allows(`/${service}.${method}/${method}`)).to.equal(false);
        expect(set.allows(`/${service}/${method}/${method}`)).to.equal(false);
      }),
      { numRuns: RUNS },
    );
  });

  it('an empty grant set allows nothing', () => {
    fc.assert(
      fc.property(fc.oneof(grantText, fc.string()), (path) => {
        expect(GrantSet.empty().allows(path)).to.equal(false);
      }),
      { numRuns: RUNS },
    );
  });
});
