// Open streams over real mTLS: ended at once when the trust bundle drops their CA or the revocation set their certificate, and no timer left after close.
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { RevocationHolder, buildRevocationSet, normalizeSerial } from '../../services/authz/revocation-set.ts';
import type { RevocationEntries } from '../../services/authz/types.ts';
import { CALLER_ID, P, SERVER_ID, TD, TestPki, meshBed, probeWithCaller, type ProbeClient } from './mesh-fixtures.ts';

const { status } = grpc;
const EMPTY: RevocationEntries = { disabledSubjects: new Map(), jtis: new Map(), serials: new Map(), kids: new Set() };

interface Outcome {
  code: grpc.status;
  details: string;
}

/** A Bidi stream that echoes each message; `ended` settles with its final status. */
function openBidi(client: ProbeClient, token: string): { echo(text: string): Promise<string>; ended: Promise<Outcome> } {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  const call = client.Bidi!(md, { deadline: Date.now() + 15_000 });
  const waiting: Array<(text: string) => void> = [];
  call.on('data', (d: { text: string }) => waiting.shift()?.(d.text));
  const ended = new Promise<Outcome>((resolve) => {
    call.on('error', (err: grpc.ServiceError) => resolve({ code: err.code, details: err.details }));
    call.on('end', () => resolve({ code: status.OK, details: '' }));
  });
  return {
    echo: (text) =>
      new Promise((resolve) => {
        waiting.push(resolve);
        call.write({ text });
      }),
    ended,
  };
}

function unary(client: ProbeClient, token: string): Promise<Outcome> {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return new Promise((resolve) =>
    client.Unary!({ text: 'x' }, md, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null) =>
      resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: '' })));
}

/** Resolves with the stream's end, or with undefined if it is still open after `ms`. */
function endedWithin(ended: Promise<Outcome>, ms: number): Promise<Outcome | undefined> {
  return Promise.race([ended, new Promise<undefined>((r) => setTimeout(r, ms, undefined))]);
}

describe('open streams over real mTLS', function () {
  this.timeout(20_000);
  const GRANTS = [`${P}/Unary`, `${P}/Bidi`];
  const bed = meshBed();

  const setUp = (revocation?: RevocationHolder) => probeWithCaller(bed, revocation);

  it('a CA removed from the trust bundle ends the open streams it issued for at once, UNAUTHENTICATED like a new call on their connection', async () => {
    const next = TestPki.create(TD, `${bed.pki.root}-next`);
    bed.cleanups.push(() => next.cleanup());
    const { probe, serverDir, client } = await setUp();
    const token = await bed.issuer.sign({ scope: 'probe:call' });
    const stream = openBidi(client, token);
    expect(await stream.echo('a')).to.equal('echo a');
    // A rotation under the same CA re-decides the stream, which still chains: it stays open.
    bed.pki.ca.writeWorkload(serverDir, bed.pki.issue(SERVER_ID, [`${P}/Unary`]));
    expect(await probe.svid.poll()).to.equal(true);
    expect(await stream.echo('b')).to.equal('echo b');
    // The server moves to the next CA and no longer trusts the one the caller's certificate is from.
    const changed = Date.now();
    next.ca.writeWorkload(serverDir, next.issue(SERVER_ID, [`${P}/Unary`]));
    expect(await probe.svid.poll()).to.equal(true);
    const end = await endedWithin(stream.ended, 5000);
    expect(end, 'the stream to end after the bundle change').to.not.equal(undefined);
    console.log(`      open stream ended ${Date.now() - changed} ms after the bundle changed`);
    expect(end!.code).to.equal(status.UNAUTHENTICATED);
    expect(end!.details).to.match(
      /^twokey: peer check failed: peer certificate no longer chains to the trust bundle \(its CA was removed\) \(decision [0-9a-f-]{36}\); the stream outlived it$/,
    );
    // That connection was closed with the stream; a new one is refused at the TLS handshake.
    expect((await unary(client, token)).code).to.equal(status.UNAVAILABLE);
    expect(probe.ran['Bidi']).to.equal(1);
  });

  it("a revoked certificate's open stream ends at once and its connection closes: the caller's next certificate is served on a new one", async () => {
    const now = Date.now();
    const holder = new RevocationHolder({ keys: bed.keys });
    holder.acceptVerified(buildRevocationSet(1, now, EMPTY));
    const { probe, callerDir, caller, client } = await setUp(holder);
    const token = await bed.issuer.sign({ scope: 'probe:call' });
    const stream = openBidi(client, token);
    expect(await stream.echo('a')).to.equal('echo a');
    const serials = new Map([[normalizeSerial(caller.svid.serialHex), Math.floor(now / 1000) + 3600]]);
    holder.acceptVerified(buildRevocationSet(2, Date.now(), { ...EMPTY, serials }));
    const end = await endedWithin(stream.ended, 5000);
    expect(end, 'the stream to end after the set changed').to.not.equal(undefined);
    expect(end!.code).to.equal(status.UNAUTHENTICATED);
    expect(end!.details).to.match(/^twokey: peer check failed: peer certificate [0-9A-Fa-f]+ is revoked \(decision [0-9a-f-]{36}\); the stream outlived it$/);
    // The caller receives a new certificate; without the closed connection it would still present the old one.
    bed.pki.ca.writeWorkload(callerDir, bed.pki.issue(CALLER_ID, GRANTS));
    expect(await caller.poll()).to.equal(true);
    expect(await unary(client, token)).to.deep.equal({ code: status.OK, details: '' });
    expect(probe.ran['Unary']).to.equal(1);
  });

  it('a unary call refused for a revoked certificate closes its connection too: the next certificate is served on a new one', async () => {
    const holder = new RevocationHolder({ keys: bed.keys });
    holder.acceptVerified(buildRevocationSet(1, Date.now(), EMPTY));
    const { probe, callerDir, caller, client } = await setUp(holder);
    const token = await bed.issuer.sign({ scope: 'probe:call' });
    expect(await unary(client, token)).to.deep.equal({ code: status.OK, details: '' });
    const serials = new Map([[normalizeSerial(caller.svid.serialHex), Math.floor(Date.now() / 1000) + 3600]]);
    holder.acceptVerified(buildRevocationSet(2, Date.now(), { ...EMPTY, serials }));
    const refused = await unary(client, token);
    expect(refused.code).to.equal(status.UNAUTHENTICATED);
    expect(refused.details).to.match(/^twokey: peer check failed: peer certificate [0-9A-Fa-f]+ is revoked \(decision [0-9a-f-]{36}\)$/);
    bed.pki.ca.writeWorkload(callerDir, bed.pki.issue(CALLER_ID, GRANTS));
    expect(await caller.poll()).to.equal(true);
    expect(await unary(client, token)).to.deep.equal({ code: status.OK, details: '' });
    expect(probe.ran['Unary']).to.equal(2);
  });

  it('closing the server stops the staleness timer of its open streams', async () => {
    const holder = new RevocationHolder({ keys: bed.keys, maxStalenessMs: 60_000 });
    holder.acceptVerified(buildRevocationSet(1, Date.now(), EMPTY));
    // Observe the timers the authorization module starts and clears (the real ones, only recorded).
    const started: NodeJS.Timeout[] = [];
    const cleared = new Set<unknown>();
    const realSet = globalThis.setInterval;
    const realClear = globalThis.clearInterval;
    globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => {
      const timer = realSet(...args);
      if (new Error().stack?.includes('open-streams.ts')) started.push(timer);
      return timer;
    }) as typeof setInterval;
    globalThis.clearInterval = ((timer: Parameters<typeof clearInterval>[0]) => {
      cleared.add(timer);
      realClear(timer);
    }) as typeof clearInterval;
    try {
      const { probe, client } = await setUp(holder);
      const stream = openBidi(client, await bed.issuer.sign({ scope: 'probe:call' }));
      expect(await stream.echo('a')).to.equal('echo a');
      expect(started, 'a staleness timer while a stream is open').to.have.length(1);
      await probe.close();
      expect(started.every((t) => cleared.has(t)), 'every staleness timer cleared after close').to.equal(true);
    } finally {
      globalThis.setInterval = realSet;
      globalThis.clearInterval = realClear;
    }
  });
});
