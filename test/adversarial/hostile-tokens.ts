// The hostile token table: each case named for its attack, with the exact outcome twokey must produce.
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { ErrorCode } from '../../services/authz/errors.ts';
import { ISSUER, MESH_AUDIENCE } from '../authz/token-fixtures.ts';
import { RawSigner, b64u, hmacToken, jti } from './jws.ts';

const { status } = grpc;

export interface TokenAttackContext {
  /** The auth service's real signing key (published in the JWKS as kid "k1"). */
  signer: RawSigner;
  /** Keys the mesh does not trust, under the trusted kid and others. */
  impostor: RawSigner;
  rsa: RawSigner;
  /** The presenting workload (the mTLS peer) and another one. */
  callerId: string;
  callerThumbprint: string;
  otherId: string;
  otherThumbprint: string;
  serverId: string;
  /** Base URL of a server that counts requests: a hostile header points here. */
  trapUrl: string;
  /** A self-signed certificate (DER, base64) the attacker controls, for x5c. */
  attackerCertB64: string;
}

export interface Expected {
  /** The decision's error code, or null when the call must be allowed (a control case). */
  code: ErrorCode | null;
  status: grpc.status;
  /** Must appear in the denial reason (direct) and in the status details (over the wire). */
  message?: RegExp;
  /** Refused before any verification key is looked up. */
  beforeCrypto?: boolean;
  /** A value the attacker wrote that the decision log records but the status never echoes. */
  logs?: string;
}

/** Written into kids and member names below; no denial's status message may ever contain it. */
export const ECHO_MARKER = 'echo-marker-6d1f';

export interface TokenCase {
  name: string;
  group: string;
  /** The call's metadata (most cases: one authorization value with the token). */
  metadata(ctx: TokenAttackContext): grpc.Metadata;
  expect: Expected;
  /**
   * Over the wire, where the transport changes what arrives: grpc-js and Node's HTTP/2 refuse to
   * send two authorization values (an intermediary folds them into one, comma-separated), and
   * trailing whitespace does not survive HTTP/2.
   */
  wire?: { metadata?: (ctx: TokenAttackContext) => grpc.Metadata; message: RegExp };
}

const nowS = (): number => Math.floor(Date.now() / 1000);

/** A valid user token's claims for the Probe service (scope probe:call), with overrides; undefined drops a claim. */
export function userClaims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const t = nowS();
  return { iss: ISSUER, sub: 'alice', aud: MESH_AUDIENCE, iat: t, nbf: t, exp: t + 600, jti: jti(), scope: 'probe:call', token_kind: 'user', ...overrides };
}

function md(value: string | string[], key = 'authorization'): grpc.Metadata {
  const m = new grpc.Metadata();
  for (const v of Array.isArray(value) ? value : [value]) m.add(key, v);
  return m;
}
const bearerMd = (token: string): grpc.Metadata => md(`Bearer ${token}`);

const MALFORMED = (message: RegExp): Expected => ({ code: 'ERR_TOKEN_MALFORMED', status: status.UNAUTHENTICATED, message, beforeCrypto: true });
const INVALID = (message: RegExp): Expected => ({ code: 'ERR_TOKEN_INVALID', status: status.UNAUTHENTICATED, message });
const EXPIRED: Expected = { code: 'ERR_TOKEN_EXPIRED', status: status.UNAUTHENTICATED, message: /expired/ };
const NOT_BOUND = (message: RegExp): Expected => ({ code: 'ERR_TOKEN_NOT_BOUND', status: status.UNAUTHENTICATED, message });
const NO_SCOPE: Expected = { code: 'ERR_SCOPE_MISSING', status: status.PERMISSION_DENIED, message: /scopes do not include "probe:call"/ };
const ALLOWED: Expected = { code: null, status: status.OK };

/** A case whose token is the trusted signer's, over a header and claims built from the context. */
function signed(
  name: string,
  group: string,
  build: (ctx: TokenAttackContext) => { header?: unknown; claims?: unknown },
  expect: Expected,
): TokenCase {
  return {
    name,
    group,
    expect,
    metadata: (ctx) => {
      const { header, claims } = build(ctx);
      return bearerMd(ctx.signer.sign(header ?? ctx.signer.header(), claims ?? userClaims()));
    },
  };
}

/** A case with a fully hand-built bearer token. */
function raw(name: string, group: string, token: (ctx: TokenAttackContext) => string, expect: Expected): TokenCase {
  return { name, group, expect, metadata: (ctx) => bearerMd(token(ctx)) };
}

/** Replaces a token's signature part. */
function withSignature(token: string, signature: Buffer | string): string {
  const [h, p] = token.split('.');
  return `${h}.${p}.${typeof signature === 'string' ? signature : signature.toString('base64url')}`;
}

const FAKE_SIG = 'c2lnbmF0dXJl';
const unsignedWith = (header: unknown, claims: unknown = userClaims()): string => `${b64u(header)}.${b64u(claims)}.${FAKE_SIG}`;

function delegated(ctx: TokenAttackContext, actor: unknown, thumbprint: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return userClaims({ token_kind: 'delegated', aud: ctx.serverId, act: actor, cnf: { 'x5t#S256': thumbprint }, ...extra });
}

function service(sub: string, thumbprint: string | undefined, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return userClaims({ token_kind: 'service', sub, cnf: thumbprint === undefined ? undefined : { 'x5t#S256': thumbprint }, ...extra });
}

function nested(depth: number): unknown {
  let v: unknown = 'x';
  for (let i = 0; i < depth; i++) v = { n: v };
  return v;
}

export const TOKEN_CASES: readonly TokenCase[] = [
  // --- controls: what must still work, so the refusals below are not a server that refuses everything
  signed('control: valid user token', 'control', () => ({}), ALLOWED),
  signed('control: audience is the server\'s own SPIFFE ID', 'control', (c) => ({ claims: userClaims({ aud: c.serverId }) }), ALLOWED),
  signed('control: audience as a one-element array', 'control', () => ({ claims: userClaims({ aud: [MESH_AUDIENCE] }) }), ALLOWED),
  signed('control: expired 10 s ago, within the 30 s leeway', 'control', () => ({ claims: userClaims({ iat: nowS() - 600, nbf: nowS() - 600, exp: nowS() - 10 }) }), ALLOWED),
  signed('control: nbf 10 s ahead, within the leeway', 'control', () => ({ claims: userClaims({ nbf: nowS() + 10 }) }), ALLOWED),
  signed('control: typ application/at+jwt (RFC 9068 form)', 'control', (c) => ({ header: c.signer.header({ typ: 'application/at+jwt' }) }), ALLOWED),
  signed('control: scope probe:call:any', 'control', () => ({ claims: userClaims({ scope: 'probe:call:any' }) }), ALLOWED),
  signed('control: delegated token bound to the presenting workload', 'control', (c) => ({ claims: delegated(c, { sub: c.callerId }, c.callerThumbprint) }), ALLOWED),
  signed('control: service token bound to the presenting workload', 'control', (c) => ({ claims: service(c.callerId, c.callerThumbprint) }), ALLOWED),

  // --- algorithm attacks
  raw('alg none, empty signature', 'alg', () => `${b64u({ alg: 'none', typ: 'at+jwt', kid: 'k1' })}.${b64u(userClaims())}.`, MALFORMED(/compact JWS/)),
  ...['none', 'None', 'NONE', 'nOnE', 'NoNe'].map((alg) =>
    raw(`alg "${alg}" with a signature part`, 'alg', () => unsignedWith({ alg, typ: 'at+jwt', kid: 'k1' }), MALFORMED(/"alg" must be one of ES256, EdDSA/)),
  ),
  raw('alg missing', 'alg', () => unsignedWith({ typ: 'at+jwt', kid: 'k1' }), MALFORMED(/"alg" must be one of/)),
  raw('alg as an array ["ES256"]', 'alg', () => unsignedWith({ alg: ['ES256'], typ: 'at+jwt', kid: 'k1' }), MALFORMED(/"alg" must be one of/)),
  raw('alg "es256" (case)', 'alg', () => unsignedWith({ alg: 'es256', typ: 'at+jwt', kid: 'k1' }), MALFORMED(/"alg" must be one of/)),
  raw('HS256 keyed with the public key PEM (key confusion)', 'alg', (c) =>
    hmacToken({ alg: 'HS256', typ: 'at+jwt', kid: 'k1' }, userClaims(), c.signer.publicKey.export({ type: 'spki', format: 'pem' }) as string), MALFORMED(/"alg" must be one of/)),
  raw('HS256 keyed with the public JWK JSON (key confusion)', 'alg', (c) =>
    hmacToken({ alg: 'HS256', typ: 'at+jwt', kid: 'k1' }, userClaims(), JSON.stringify(c.signer.publicJwk)), MALFORMED(/"alg" must be one of/)),
  raw('HS256 with an empty secret', 'alg', () => hmacToken({ alg: 'HS256', typ: 'at+jwt', kid: 'k1' }, userClaims(), ''), MALFORMED(/"alg" must be one of/)),
  raw('HS256 with the guessed secret "secret"', 'alg', () => hmacToken({ alg: 'HS256', typ: 'at+jwt', kid: 'k1' }, userClaims(), 'secret'), MALFORMED(/"alg" must be one of/)),
  raw('RS256 signed by an RSA key under the trusted kid', 'alg', (c) => c.rsa.sign(c.rsa.header({ kid: 'k1' }), userClaims()), MALFORMED(/"alg" must be one of/)),
  raw('PS256', 'alg', () => unsignedWith({ alg: 'PS256', typ: 'at+jwt', kid: 'k1' }), MALFORMED(/"alg" must be one of/)),
  raw('ES384', 'alg', () => unsignedWith({ alg: 'ES384', typ: 'at+jwt', kid: 'k1' }), MALFORMED(/"alg" must be one of/)),
  raw('EdDSA claimed for the ES256 key', 'alg', (c) => withSignature(c.signer.sign(c.signer.header({ alg: 'EdDSA' }), userClaims()), randomBytes(64)), INVALID(/not an EdDSA key/)),

  // --- signature attacks
  raw('ECDSA signature of 64 zero bytes', 'signature', (c) => withSignature(c.signer.sign(c.signer.header(), userClaims()), Buffer.alloc(64)), INVALID(/signature does not verify/)),
  raw('ECDSA signature in ASN.1 DER form', 'signature', (c) => {
    const input = `${b64u(c.signer.header())}.${b64u(userClaims())}`;
    return `${input}.${c.signer.derSignature(input).toString('base64url')}`;
  }, INVALID(/signature does not verify/)),
  raw('ECDSA signature one byte short', 'signature', (c) => {
    const t = c.signer.sign(c.signer.header(), userClaims());
    return withSignature(t, Buffer.from(t.split('.')[2]!, 'base64url').subarray(0, 63));
  }, INVALID(/signature does not verify/)),
  raw('ECDSA signature one byte long', 'signature', (c) => {
    const t = c.signer.sign(c.signer.header(), userClaims());
    return withSignature(t, Buffer.concat([Buffer.from(t.split('.')[2]!, 'base64url'), Buffer.from([0])]));
  }, INVALID(/signature does not verify/)),
  raw('signature part empty', 'signature', (c) => withSignature(c.signer.sign(c.signer.header(), userClaims()), ''), MALFORMED(/compact JWS/)),
  raw('signature cut from another valid token', 'signature', (c) => {
    const other = c.signer.sign(c.signer.header(), userClaims());
    return withSignature(c.signer.sign(c.signer.header(), userClaims({ sub: 'mallory' })), other.split('.')[2]!);
  }, INVALID(/signature does not verify/)),
  raw('signature with a non-canonical last character', 'signature', (c) => {
    const t = c.signer.sign(c.signer.header(), userClaims());
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const s = t.split('.')[2]!;
    return withSignature(t, s.slice(0, -1) + alphabet[alphabet.indexOf(s.at(-1)!) ^ 1]);
  }, MALFORMED(/signature is not canonical base64url/)),
  raw('payload tampered after signing (sub changed)', 'signature', (c) => {
    const [h, , s] = c.signer.sign(c.signer.header(), userClaims()).split('.');
    return `${h}.${b64u(userClaims({ sub: 'mallory' }))}.${s}`;
  }, INVALID(/signature does not verify/)),
  raw('signed by an impostor key under the trusted kid', 'signature', (c) => c.impostor.sign(c.impostor.header({ kid: 'k1' }), userClaims()), INVALID(/signature does not verify/)),
  raw('signed by a key not in the JWKS (unknown kid)', 'signature', (c) => c.impostor.sign(c.impostor.header(), userClaims()), { ...INVALID(/unknown signing key id/), logs: 'attacker' }),

  // --- header parameters that choose keys or change processing
  raw('embedded jwk header (attacker key, attacker signature)', 'header', (c) => c.impostor.sign(c.impostor.header({ kid: 'k1', jwk: c.impostor.publicJwk }), userClaims()), MALFORMED(/"jwk" is not accepted/)),
  raw('jku header pointing at an attacker URL', 'header', (c) => c.impostor.sign(c.impostor.header({ jku: `${c.trapUrl}/jwks.json` }), userClaims()), MALFORMED(/"jku" is not accepted/)),
  raw('x5u header pointing at an attacker URL', 'header', (c) => c.impostor.sign(c.impostor.header({ x5u: `${c.trapUrl}/cert.pem` }), userClaims()), MALFORMED(/"x5u" is not accepted/)),
  raw('x5c header with an attacker certificate', 'header', (c) => c.impostor.sign(c.impostor.header({ x5c: [c.attackerCertB64] }), userClaims()), MALFORMED(/"x5c" is not accepted/)),
  raw('x5t#S256 header', 'header', (c) => c.signer.sign(c.signer.header({ 'x5t#S256': c.callerThumbprint }), userClaims()), MALFORMED(/"x5t#S256" is not accepted/)),
  raw('crit naming an unknown extension', 'header', (c) => c.signer.sign(c.signer.header({ crit: ['http://evil.example/ext'], 'http://evil.example/ext': true }), userClaims()), MALFORMED(/is not accepted/)),
  raw('crit ["exp"]', 'header', (c) => c.signer.sign(c.signer.header({ crit: ['exp'] }), userClaims()), MALFORMED(/"crit" is not accepted/)),
  raw('b64 false (unencoded payload)', 'header', (c) => c.signer.sign(c.signer.header({ b64: false, crit: ['b64'] }), userClaims()), MALFORMED(/is not accepted/)),
  raw('zip DEF (compressed payload)', 'header', (c) => c.signer.sign(c.signer.header({ zip: 'DEF' }), userClaims()), MALFORMED(/"zip" is not accepted/)),
  raw('cty JWT (nested token)', 'header', (c) => c.signer.sign(c.signer.header({ cty: 'JWT' }), userClaims()), MALFORMED(/"cty" is not accepted/)),
  raw('__proto__ header member', 'header', (c) => c.signer.sign(`{"alg":"ES256","typ":"at+jwt","kid":"k1","__proto__":{"alg":"none"}}`, userClaims()), { ...MALFORMED(/header parameter \(a name not registered for JWTs\) is not accepted/), logs: '__proto__' }),
  raw('a header member named with the marker (not echoed)', 'header', (c) => c.signer.sign(c.signer.header({ [`x-${ECHO_MARKER}`]: 1 }), userClaims()), { ...MALFORMED(/header parameter \(a name not registered for JWTs\) is not accepted/), logs: `x-${ECHO_MARKER}` }),
  raw('header repeats alg (none, then ES256)', 'header', (c) => c.signer.sign('{"alg":"none","alg":"ES256","typ":"at+jwt","kid":"k1"}', userClaims()), MALFORMED(/header repeats the member "alg"/)),
  raw('typ missing', 'header', (c) => c.signer.sign({ alg: 'ES256', kid: 'k1' }, userClaims()), MALFORMED(/"typ" header is missing/)),
  raw('typ JWT', 'header', (c) => c.signer.sign(c.signer.header({ typ: 'JWT' }), userClaims()), INVALID(/typ/)),
  raw('typ id_token+jwt', 'header', (c) => c.signer.sign(c.signer.header({ typ: 'id_token+jwt' }), userClaims()), INVALID(/typ/)),
  raw('typ "at+jwt " with a trailing space', 'header', (c) => c.signer.sign(c.signer.header({ typ: 'at+jwt ' }), userClaims()), INVALID(/typ/)),

  // --- hostile kid values
  raw('kid path traversal ../../../../etc/passwd', 'kid', (c) => c.impostor.sign(c.impostor.header({ kid: '../../../../etc/passwd' }), userClaims()), INVALID(/unknown signing key id/)),
  raw('kid SQL injection with spaces', 'kid', (c) => c.impostor.sign(c.impostor.header({ kid: "k1' OR '1'='1" }), userClaims()), MALFORMED(/"kid" must be a short printable string/)),
  raw('kid SQL injection without spaces', 'kid', (c) => c.impostor.sign(c.impostor.header({ kid: "k1'--" }), userClaims()), INVALID(/unknown signing key id/)),
  raw('kid is a URL (no fetch)', 'kid', (c) => c.impostor.sign(c.impostor.header({ kid: `${c.trapUrl}/key` }), userClaims()), INVALID(/unknown signing key id/)),
  raw('kid __proto__', 'kid', (c) => c.impostor.sign(c.impostor.header({ kid: '__proto__' }), userClaims()), INVALID(/unknown signing key id/)),
  raw('kid a number', 'kid', (c) => c.signer.sign(c.signer.header({ kid: 1 }), userClaims()), MALFORMED(/"kid" must be a short printable string/)),
  raw('kid null', 'kid', (c) => c.signer.sign(c.signer.header({ kid: null }), userClaims()), MALFORMED(/"kid"/)),
  raw('kid an object', 'kid', (c) => c.signer.sign(c.signer.header({ kid: { $ne: '' } }), userClaims()), MALFORMED(/"kid"/)),
  raw('kid empty', 'kid', (c) => c.signer.sign(c.signer.header({ kid: '' }), userClaims()), MALFORMED(/"kid"/)),
  raw('kid of 129 characters', 'kid', (c) => c.signer.sign(c.signer.header({ kid: 'k'.repeat(129) }), userClaims()), MALFORMED(/"kid"/)),
  raw('kid with a newline (log injection)', 'kid', (c) => c.signer.sign(c.signer.header({ kid: 'k1\n{"decision":"allow"}' }), userClaims()), MALFORMED(/"kid"/)),
  raw('kid with a NUL byte', 'kid', (c) => c.signer.sign(c.signer.header({ kid: 'k1\u0000' }), userClaims()), MALFORMED(/"kid"/)),
  raw('kid carrying the marker (not echoed)', 'kid', (c) => c.impostor.sign(c.impostor.header({ kid: `k-${ECHO_MARKER}` }), userClaims()), { ...INVALID(/unknown signing key id/), logs: `k-${ECHO_MARKER}` }),
  raw('kid carrying the marker under the trusted key (not echoed)', 'kid', (c) => c.signer.sign(c.signer.header({ kid: `k1-${ECHO_MARKER}` }), userClaims()), { ...INVALID(/unknown signing key id/), logs: `k1-${ECHO_MARKER}` }),
  raw('kid missing', 'kid', (c) => c.signer.sign({ alg: 'ES256', typ: 'at+jwt' }, userClaims()), MALFORMED(/"kid"/)),

  // --- malformed compact forms
  raw('a single part', 'compact', () => 'abc', MALFORMED(/compact JWS/)),
  raw('two parts', 'compact', (c) => c.signer.sign(c.signer.header(), userClaims()).split('.').slice(0, 2).join('.'), MALFORMED(/compact JWS/)),
  raw('four parts', 'compact', (c) => `${c.signer.sign(c.signer.header(), userClaims())}.${FAKE_SIG}`, MALFORMED(/compact JWS/)),
  raw('JWE compact (five parts)', 'compact', () => `${b64u({ alg: 'RSA-OAEP-256', enc: 'A256GCM', kid: 'k1' })}.${b64u(randomBytes(32))}.${b64u(randomBytes(12))}.${b64u(randomBytes(40))}.${b64u(randomBytes(16))}`, MALFORMED(/compact JWS/)),
  raw('JWE with alg dir and empty key part', 'compact', () => `${b64u({ alg: 'dir', enc: 'A128GCM' })}..${b64u(randomBytes(12))}.${b64u(randomBytes(40))}.${b64u(randomBytes(16))}`, MALFORMED(/compact JWS/)),
  raw('only dots', 'compact', () => '..', MALFORMED(/compact JWS/)),
  raw('empty payload part', 'compact', (c) => { const [h, , s] = c.signer.sign(c.signer.header(), userClaims()).split('.'); return `${h}..${s}`; }, MALFORMED(/compact JWS/)),
  raw('header not canonical base64url', 'compact', (c) => {
    const t = c.signer.sign(c.signer.header(), userClaims());
    const [h, p, s] = t.split('.');
    // '{"alg"...}' is 40+ bytes; appending one char gives a dangling 6 bits Node silently drops.
    return `${h}A.${p}.${s}`;
  }, MALFORMED(/header is not canonical base64url|compact JWS|header is not UTF-8 JSON/)),
  raw('header not JSON', 'compact', () => `${b64u('{alg:ES256}')}.${b64u(userClaims())}.${FAKE_SIG}`, MALFORMED(/header is not UTF-8 JSON/)),
  raw('header a JSON array', 'compact', () => `${b64u('["ES256"]')}.${b64u(userClaims())}.${FAKE_SIG}`, MALFORMED(/header is not a JSON object/)),
  raw('payload invalid UTF-8', 'compact', (c) => `${b64u(c.signer.header())}.${b64u(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))}.${FAKE_SIG}`, MALFORMED(/payload is not UTF-8 JSON/)),
  raw('nested JWT: the payload is another compact token', 'compact', (c) => c.signer.sign(c.signer.header(), JSON.stringify(c.signer.sign(c.signer.header(), userClaims()))), MALFORMED(/payload is not a JSON object/)),

  // --- size and shape, refused before any crypto
  raw('a 9 KB token', 'size', (c) => c.signer.sign(c.signer.header(), userClaims({ pad: 'x'.repeat(9000) })), MALFORMED(/longer than 8192 bytes/)),
  raw('a 2 KB header', 'size', (c) => c.signer.sign({ ...c.signer.header(), kid: 'k1', typ: `at+jwt${' '.repeat(1500)}` }, userClaims()), MALFORMED(/header longer than 1024/)),
  raw('claims nested 200 levels deep', 'size', (c) => c.signer.sign(c.signer.header(), userClaims({ deep: nested(200) })), MALFORMED(/nested deeper than 8 levels/)),
  raw('claims as a 2000-deep array', 'size', (c) => c.signer.sign(c.signer.header(), `{"sub":"alice","a":${'['.repeat(2000)}${']'.repeat(2000)}}`), MALFORMED(/nested deeper than 8 levels/)),
  raw('40 claims', 'size', (c) => c.signer.sign(c.signer.header(), userClaims(Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`c${i}`, i])))), MALFORMED(/more than 32 claims/)),
  signed('65 scopes', 'size', () => ({ claims: userClaims({ scope: ['probe:call', ...Array.from({ length: 64 }, (_, i) => `s${i}`)].join(' ') }) }), INVALID(/more than 64 scopes/)),

  // --- registered claims: missing, wrong types, times
  ...['iss', 'sub', 'aud', 'exp', 'iat', 'jti'].map((claim) =>
    signed(`"${claim}" missing`, 'claims', () => ({ claims: userClaims({ [claim]: undefined }) }), INVALID(new RegExp(claim))),
  ),
  signed('"exp" as a string', 'claims', () => ({ claims: userClaims({ exp: String(nowS() + 600) }) }), INVALID(/exp/)),
  signed('"iat" as a string', 'claims', () => ({ claims: userClaims({ iat: String(nowS()) }) }), INVALID(/iat/)),
  signed('"sub" as an array', 'claims', () => ({ claims: userClaims({ sub: ['alice'] }) }), INVALID(/sub/)),
  signed('"aud" as a number', 'claims', () => ({ claims: userClaims({ aud: 1 }) }), INVALID(/aud/)),
  signed('"jti" as a number', 'claims', () => ({ claims: userClaims({ jti: 123456789 }) }), INVALID(/jti/)),
  signed('"nbf" as a string', 'claims', () => ({ claims: userClaims({ nbf: String(nowS()) }) }), INVALID(/nbf/)),
  signed('"exp" ten years ahead', 'claims', () => ({ claims: userClaims({ exp: nowS() + 10 * 365 * 86400 }) }), INVALID(/lifetime exp - iat exceeds/)),
  signed('"nbf" two minutes ahead', 'claims', () => ({ claims: userClaims({ nbf: nowS() + 120 }) }), INVALID(/nbf/)),
  signed('"iat" two minutes ahead', 'claims', () => ({ claims: userClaims({ iat: nowS() + 120, exp: nowS() + 700 }) }), INVALID(/iat/)),
  signed('expired 60 s ago, beyond the leeway', 'claims', () => ({ claims: userClaims({ iat: nowS() - 600, nbf: nowS() - 600, exp: nowS() - 60 }) }), EXPIRED),
  signed('expired a day ago', 'claims', () => ({ claims: userClaims({ iat: nowS() - 86400, nbf: nowS() - 86400, exp: nowS() - 86000 }) }), EXPIRED),
  signed('"exp" equal to "iat"', 'claims', () => ({ claims: userClaims({ exp: nowS() }) }), INVALID(/"exp" is not after "iat"|expired/)),
  signed('issuer of another service', 'claims', () => ({ claims: userClaims({ iss: 'https://evil.example' }) }), INVALID(/iss/)),
  signed('issuer with a trailing slash', 'claims', () => ({ claims: userClaims({ iss: `${ISSUER}/` }) }), INVALID(/iss/)),
  signed('issuer over http', 'claims', () => ({ claims: userClaims({ iss: ISSUER.replace('https:', 'http:') }) }), INVALID(/iss/)),
  signed('audience of another service', 'claims', (c) => ({ claims: userClaims({ aud: c.otherId }) }), INVALID(/audience .* is not accepted here/)),
  signed('several audiences (mesh and another service)', 'claims', (c) => ({ claims: userClaims({ aud: [MESH_AUDIENCE, c.otherId] }) }), INVALID(/exactly one audience/)),
  signed('several audiences (own ID and mesh)', 'claims', (c) => ({ claims: userClaims({ aud: [c.serverId, MESH_AUDIENCE] }) }), INVALID(/exactly one audience/)),
  signed('audience an empty array', 'claims', () => ({ claims: userClaims({ aud: [] }) }), INVALID(/aud/)),
  signed('audience of another trust domain', 'claims', () => ({ claims: userClaims({ aud: 'spiffe://evil.example' }) }), INVALID(/is not accepted here/)),
  raw('payload repeats "sub"', 'claims', (c) => c.signer.sign(c.signer.header(), JSON.stringify(userClaims()).replace('"sub":"alice"', '"sub":"alice","sub":"bob"')), MALFORMED(/payload repeats the member "sub"/)),
  raw('payload repeats a member named with the marker (not echoed)', 'claims', (c) => c.signer.sign(c.signer.header(), JSON.stringify(userClaims()).replace('"sub":"alice"', `"sub":"alice","${ECHO_MARKER}":1,"${ECHO_MARKER}":2`)), { ...MALFORMED(/payload repeats the member \(a name not registered for JWTs\)/), logs: ECHO_MARKER }),
  raw('payload repeats "sub" through an escape', 'claims', (c) => c.signer.sign(c.signer.header(), JSON.stringify(userClaims()).replace('"sub":"alice"', '"sub":"alice","s\\u0075b":"bob"')), MALFORMED(/payload repeats the member "sub"/)),
  raw('act repeats "sub"', 'claims', (c) => c.signer.sign(c.signer.header(), JSON.stringify(delegated(c, { sub: c.callerId }, c.callerThumbprint)).replace(`"act":{"sub":"${c.callerId}"`, `"act":{"sub":"${c.otherId}","sub":"${c.callerId}"`)), MALFORMED(/payload repeats the member "sub"/)),
  raw('__proto__ claim carrying token_kind', 'claims', (c) => c.signer.sign(c.signer.header(), JSON.stringify(userClaims({ token_kind: undefined })).replace(/}$/, ',"__proto__":{"token_kind":"service"}}')), INVALID(/"token_kind" must be/)),
  raw('__proto__ claim carrying the scope', 'claims', (c) => c.signer.sign(c.signer.header(), JSON.stringify(userClaims({ scope: 'images:read' })).replace(/}$/, ',"__proto__":{"scope":"probe:call"}}')), NO_SCOPE),
  signed('token_kind missing', 'claims', () => ({ claims: userClaims({ token_kind: undefined }) }), INVALID(/"token_kind" must be/)),
  signed('token_kind "admin"', 'claims', () => ({ claims: userClaims({ token_kind: 'admin' }) }), INVALID(/"token_kind" must be/)),

  // --- scope
  signed('no scope', 'scope', () => ({ claims: userClaims({ scope: undefined }) }), NO_SCOPE),
  signed('scope in another case (PROBE:CALL)', 'scope', () => ({ claims: userClaims({ scope: 'PROBE:CALL' }) }), NO_SCOPE),
  signed('scope with a prefix of the permission (probe)', 'scope', () => ({ claims: userClaims({ scope: 'probe probe:cal' }) }), NO_SCOPE),
  signed('scope extending the permission (probe:callx)', 'scope', () => ({ claims: userClaims({ scope: 'probe:callx probe:call:' }) }), NO_SCOPE),
  signed('scope wildcard (* and probe:*)', 'scope', () => ({ claims: userClaims({ scope: '* probe:*' }) }), NO_SCOPE),
  signed('scope as an array', 'scope', () => ({ claims: userClaims({ scope: ['probe:call'] }) }), INVALID(/"scope" must be a space-separated string/)),
  signed('scope with a double space', 'scope', () => ({ claims: userClaims({ scope: 'images:read  probe:call' }) }), INVALID(/ill-formed scope token/)),

  // --- token kinds and binding to the presenting workload
  signed('user token whose sub is a SPIFFE ID', 'kind', (c) => ({ claims: userClaims({ sub: c.callerId }) }), INVALID(/user token "sub" is not a username/)),
  signed('user token carrying cnf', 'kind', (c) => ({ claims: userClaims({ cnf: { 'x5t#S256': c.callerThumbprint } }) }), INVALID(/a user token carries no "act" and no "cnf"/)),
  signed('user token carrying act', 'kind', (c) => ({ claims: userClaims({ act: { sub: c.callerId } }) }), INVALID(/a user token carries no "act" and no "cnf"/)),
  signed('delegated token presented by a workload other than its actor', 'binding', (c) => ({ claims: delegated(c, { sub: c.otherId }, c.otherThumbprint) }), NOT_BOUND(/actor \(act\.sub\) .* is not the peer/)),
  signed('delegated token naming the peer but bound to another certificate', 'binding', (c) => ({ claims: delegated(c, { sub: c.callerId }, c.otherThumbprint) }), NOT_BOUND(/bound \(cnf\.x5t#S256\) to another certificate/)),
  signed('delegated token whose inner actor is the peer', 'binding', (c) => ({ claims: delegated(c, { sub: c.otherId, act: { sub: c.callerId } }, c.callerThumbprint) }), NOT_BOUND(/is not the peer/)),
  signed('delegated token deeper than the maximum', 'binding', (c) => {
    let act: Record<string, unknown> = { sub: c.otherId };
    for (let i = 0; i < 4; i++) act = { sub: i === 3 ? c.callerId : c.otherId, act };
    return { claims: delegated(c, act, c.callerThumbprint) };
  }, INVALID(/delegation chain deeper than 4/)),
  signed('delegated token whose actor is a username', 'binding', (c) => ({ claims: delegated(c, { sub: 'caller' }, c.callerThumbprint) }), INVALID(/"act.sub" is not a SPIFFE ID/)),
  signed('delegated token without cnf', 'binding', (c) => ({ claims: delegated(c, { sub: c.callerId }, c.callerThumbprint, { cnf: undefined }) }), INVALID(/must be bound to a certificate/)),
  signed('delegated token whose cnf has a second member', 'binding', (c) => ({ claims: delegated(c, { sub: c.callerId }, c.callerThumbprint, { cnf: { 'x5t#S256': c.callerThumbprint, jkt: 'x' } }) }), INVALID(/exactly one "x5t#S256"/)),
  signed('delegated token whose subject looks like a service', 'binding', (c) => ({ claims: delegated(c, { sub: c.callerId }, c.callerThumbprint, { sub: c.otherId }) }), INVALID(/delegated token "sub" is not a username/)),
  signed('service token of another workload', 'binding', (c) => ({ claims: service(c.otherId, c.otherThumbprint) }), NOT_BOUND(/service token subject .* is not the peer/)),
  signed('service token naming the peer, bound to another certificate', 'binding', (c) => ({ claims: service(c.callerId, c.otherThumbprint) }), NOT_BOUND(/bound \(cnf\.x5t#S256\) to another certificate/)),
  signed('service token of the same path in another trust domain', 'binding', (c) => ({ claims: service(c.callerId.replace('twokey.local', 'evil.example'), c.callerThumbprint) }), NOT_BOUND(/is not the peer/)),
  signed('service token whose subject is a username', 'binding', (c) => ({ claims: service('caller', c.callerThumbprint) }), INVALID(/"sub" is not a SPIFFE ID/)),
  signed('service token without cnf', 'binding', (c) => ({ claims: service(c.callerId, undefined) }), INVALID(/must be bound to a certificate/)),
  signed('service token carrying act', 'binding', (c) => ({ claims: service(c.callerId, c.callerThumbprint, { act: { sub: c.callerId } }) }), INVALID(/a service token carries no "act"/)),

  // --- the authorization value itself
  { name: 'no authorization metadata', group: 'metadata', metadata: () => new grpc.Metadata(), expect: { code: 'ERR_TOKEN_MISSING', status: status.UNAUTHENTICATED, message: /no "authorization: Bearer <token>" metadata/, beforeCrypto: true } },
  {
    name: 'two authorization values (valid token twice)',
    group: 'metadata',
    metadata: (c) => { const t = c.signer.sign(c.signer.header(), userClaims()); return md([`Bearer ${t}`, `Bearer ${t}`]); },
    expect: MALFORMED(/more than one authorization value/),
    wire: { metadata: (c) => { const t = c.signer.sign(c.signer.header(), userClaims()); return md(`Bearer ${t}, Bearer ${t}`); }, message: /not "Bearer <compact JWS>"/ },
  },
  {
    name: 'two authorization values (valid, then forged)',
    group: 'metadata',
    metadata: (c) => md([`Bearer ${c.signer.sign(c.signer.header(), userClaims({ scope: 'x' }))}`, `Bearer ${c.impostor.sign(c.impostor.header({ kid: 'k1' }), userClaims())}`]),
    expect: MALFORMED(/more than one authorization value/),
    wire: { metadata: (c) => md(`Bearer ${c.signer.sign(c.signer.header(), userClaims({ scope: 'x' }))},Bearer ${c.impostor.sign(c.impostor.header({ kid: 'k1' }), userClaims())}`), message: /not "Bearer <compact JWS>"/ },
  },
  { name: 'authorization-bin carrying a token', group: 'metadata', metadata: (c) => { const m = new grpc.Metadata(); m.set('authorization-bin', Buffer.from(`Bearer ${c.signer.sign(c.signer.header(), userClaims())}`)); return m; }, expect: { code: 'ERR_TOKEN_MISSING', status: status.UNAUTHENTICATED, message: /no "authorization/, beforeCrypto: true } },
  { name: 'Basic scheme', group: 'metadata', metadata: () => md(`Basic ${Buffer.from('alice:password').toString('base64')}`), expect: MALFORMED(/not "Bearer <compact JWS>"/) },
  { name: 'bare "Bearer"', group: 'metadata', metadata: () => md('Bearer'), expect: MALFORMED(/not "Bearer <compact JWS>"/) },
  { name: '"Bearer " with nothing after it', group: 'metadata', metadata: () => md('Bearer '), expect: MALFORMED(/not "Bearer <compact JWS>"/), wire: { message: /no "authorization: Bearer <token>" metadata/ } },
  { name: 'lowercase "bearer" scheme', group: 'metadata', metadata: (c) => md(`bearer ${c.signer.sign(c.signer.header(), userClaims())}`), expect: MALFORMED(/not "Bearer <compact JWS>"/) },
  { name: 'two spaces after Bearer', group: 'metadata', metadata: (c) => md(`Bearer  ${c.signer.sign(c.signer.header(), userClaims())}`), expect: MALFORMED(/not "Bearer <compact JWS>"/) },
  { name: 'a second token after a space', group: 'metadata', metadata: (c) => md(`Bearer ${c.signer.sign(c.signer.header(), userClaims())} ${c.signer.sign(c.signer.header(), userClaims())}`), expect: MALFORMED(/not "Bearer <compact JWS>"/) },
  { name: 'base64 padding in the token', group: 'metadata', metadata: (c) => md(`Bearer ${c.signer.sign(c.signer.header(), userClaims())}==`), expect: MALFORMED(/not "Bearer <compact JWS>"/) },
  { name: 'standard base64 alphabet (+ and /)', group: 'metadata', metadata: (c) => md(`Bearer ${c.signer.sign(c.signer.header(), userClaims()).replace(/-/g, '+').replace(/_/g, '/')}x+/`), expect: MALFORMED(/not "Bearer <compact JWS>"/) },
  { name: 'token in a cookie-style key instead of authorization', group: 'metadata', metadata: (c) => { const m = new grpc.Metadata(); m.set('x-access-token', c.signer.sign(c.signer.header(), userClaims())); return m; }, expect: { code: 'ERR_TOKEN_MISSING', status: status.UNAUTHENTICATED, message: /no "authorization/, beforeCrypto: true } },
];
