// The signature step: what verifies, and each refusal that must not depend on the token's choices.
import { expect } from 'chai';
import { generateKeyPairSync, sign, webcrypto } from 'node:crypto';
import { asKeyObject, jwsSignatureVerifies } from './jws-signature.ts';

const INPUT = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9';
const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ed = generateKeyPairSync('ed25519');
const es256 = (input: string, encoding: 'ieee-p1363' | 'der' = 'ieee-p1363'): Buffer =>
  sign('sha256', Buffer.from(input), { key: p256.privateKey, dsaEncoding: encoding });

describe('jwsSignatureVerifies', () => {
  it('verifies ES256 (r || s) and EdDSA signatures over the signing input', async () => {
    expect(await jwsSignatureVerifies('ES256', p256.publicKey, INPUT, es256(INPUT))).to.equal(true);
    expect(await jwsSignatureVerifies('EdDSA', ed.publicKey, INPUT, sign(null, Buffer.from(INPUT), ed.privateKey))).to.equal(true);
  });

  it('refuses a signature over other bytes', async () => {
    expect(await jwsSignatureVerifies('ES256', p256.publicKey, `${INPUT}x`, es256(INPUT))).to.equal(false);
  });

  it('refuses a DER-encoded ECDSA signature and any signature that is not 64 bytes', async () => {
    expect(await jwsSignatureVerifies('ES256', p256.publicKey, INPUT, es256(INPUT, 'der'))).to.equal(false);
    const sig = es256(INPUT);
    expect(await jwsSignatureVerifies('ES256', p256.publicKey, INPUT, sig.subarray(0, 63))).to.equal(false);
    expect(await jwsSignatureVerifies('ES256', p256.publicKey, INPUT, Buffer.concat([sig, Buffer.alloc(1)]))).to.equal(false);
  });

  it('refuses a key of another type than the algorithm names, a P-384 key, a private key and an unknown algorithm', async () => {
    const edSig = sign(null, Buffer.from(INPUT), ed.privateKey);
    expect(await jwsSignatureVerifies('ES256', ed.publicKey, INPUT, edSig)).to.equal(false);
    expect(await jwsSignatureVerifies('EdDSA', p256.publicKey, INPUT, es256(INPUT))).to.equal(false);
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const sig384 = sign('sha256', Buffer.from(INPUT), { key: p384.privateKey, dsaEncoding: 'ieee-p1363' });
    expect(await jwsSignatureVerifies('ES256', p384.publicKey, INPUT, sig384.subarray(0, 64))).to.equal(false);
    expect(await jwsSignatureVerifies('ES256', p256.privateKey, INPUT, es256(INPUT))).to.equal(false);
    expect(await jwsSignatureVerifies('HS256', p256.publicKey, INPUT, es256(INPUT))).to.equal(false);
  });

  it('takes a WebCrypto key as the same key, converted once', async () => {
    const pair = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const raw = Buffer.from(await webcrypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, pair.privateKey, Buffer.from(INPUT)));
    const key = asKeyObject(pair.publicKey);
    expect(asKeyObject(pair.publicKey)).to.equal(key);
    expect(await jwsSignatureVerifies('ES256', key, INPUT, raw)).to.equal(true);
  });
});
