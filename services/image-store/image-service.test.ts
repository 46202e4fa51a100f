// ImageStore handler logic over a real repository, the same suite on SQLite and on PostgreSQL:
// ownership, ':any' scopes, limits, events, and (PostgreSQL) two replicas sharing one log.
import { expect } from 'chai';
import type { VerifiedToken } from '../authz/types.ts';
import { forEachEngine, type EngineFixture } from '../../test/postgres/engines.ts';
import { followEvents } from './event-feed.ts';
import { imageDatabasePath, openImageDatabase } from './image-database.ts';
import { LIMITS } from './image-input.ts';
import type { ImageEventRecord, ImageRepository } from './image-repository.ts';
import { ImageService } from './image-service.ts';
import { PostgresImageRepository } from './postgres-image-repository.ts';
import { SqliteImageRepository } from './sqlite-image-repository.ts';

function token(subject: string, scopes: string[], kind: VerifiedToken['kind'] = 'user'): VerifiedToken {
  return {
    kind, subject, issuer: 'i', audience: 'a', jti: 'x'.repeat(22), scopes: new Set(scopes), actorChain: [],
    boundThumbprint: undefined, clientId: undefined, validFromMs: 0, validUntilMs: Number.MAX_SAFE_INTEGER,
  };
}

const USER = ['images:read', 'images:write', 'images:delete', 'images:tag'];
const alice = token('alice', USER);
const bob = token('bob', USER);
const cleaner = token('spiffe://twokey.local/ns/twokey/sa/cleaner', ['images:read:any', 'images:delete:any'], 'service');
const upload = { name: 'a.jpg', content_type: 'image/jpeg', content: Buffer.from([0xff, 0xd8, 1]), tags: [] as string[] };

async function codeOf(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (err) {
    return (err as { code: string }).code;
  }
  return 'none';
}

type Options = { now?: () => number; requestKeyTtlMs?: number };

function opener(fx: EngineFixture): (opts?: Options) => Promise<ImageRepository> {
  if (fx.engine === 'sqlite') return async (opts = {}) => new SqliteImageRepository(openImageDatabase(imageDatabasePath(fx.sqlitePath(''))), opts);
  return (opts = {}) => PostgresImageRepository.open(fx.postgres(), opts);
}

forEachEngine('image store service logic', (fx) => {
  const repos: ImageRepository[] = [];
  let repo: ImageRepository;
  let service: ImageService;
  const open = async (opts?: Options): Promise<ImageRepository> => {
    const r = await opener(fx)(opts);
    repos.push(r);
    return r;
  };
  beforeEach(async () => {
    repo = await open();
    service = new ImageService(repo);
  });
  afterEach(async () => {
    for (const r of repos.splice(0)) await r.close();
  });

  it("denies another user's image and a missing image alike, so existence does not leak", async () => {
    const image = await service.create(alice, upload);
    expect(await codeOf(() => service.get(bob, { id: image.id, without_content: false }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(await codeOf(() => service.get(bob, { id: `img_${'0'.repeat(32)}`, without_content: false }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(await codeOf(() => service.delete(bob, { id: image.id }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(await codeOf(() => service.get(cleaner, { id: `img_${'0'.repeat(32)}`, without_content: false }))).to.equal('ERR_RESOURCE_NOT_FOUND');
  });

  it('lists only the caller’s own images unless it holds images:read:any', async () => {
    await service.create(alice, upload);
    await service.create(bob, { ...upload, tags: ['flagged'] });
    expect((await service.list(alice, { owner: '', tag: '', page_size: 0, page_token: '' })).images.map((i) => i.owner)).to.deep.equal(['alice']);
    expect(await codeOf(() => service.list(alice, { owner: 'bob', tag: '', page_size: 0, page_token: '' }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect((await service.list(cleaner, { owner: '', tag: 'flagged', page_size: 0, page_token: '' })).images.map((i) => i.owner)).to.deep.equal(['bob']);
  });

  it('pages with opaque tokens and rejects forged ones', async () => {
    for (let i = 0; i < 3; i++) await service.create(alice, upload);
    const first = await service.list(alice, { owner: '', tag: '', page_size: 2, page_token: '' });
    expect(first.images).to.have.length(2);
    const second = await service.list(alice, { owner: '', tag: '', page_size: 2, page_token: first.next_page_token });
    expect(second.images).to.have.length(1);
    expect(second.next_page_token).to.equal('');
    expect(await codeOf(() => service.list(alice, { owner: '', tag: '', page_size: 2, page_token: 'p1' }))).to.equal('ERR_REQUEST_INVALID');
  });

  it('refuses oversized content with a size error, and bad content types', async () => {
    const big = Buffer.alloc(LIMITS.maxContentBytes + 1);
    expect(await codeOf(() => service.create(alice, { ...upload, content: big }))).to.equal('ERR_RESOURCE_TOO_LARGE');
    expect(await codeOf(() => service.create(alice, { ...upload, content_type: 'text/html' }))).to.equal('ERR_REQUEST_INVALID');
  });

  it("lets a delegated images:tag token tag only its user's images, and do nothing else", async () => {
    const mine = await service.create(alice, upload);
    const theirs = await service.create(bob, upload);
    const delegated: VerifiedToken = { ...token('alice', ['images:tag'], 'delegated'), actorChain: ['spiffe://twokey.local/ns/twokey/sa/tagging'] };
    expect((await service.setTags(delegated, { id: mine.id, tags: ['geo:x'] })).tags).to.deep.equal(['geo:x']);
    expect(await codeOf(() => service.setTags(delegated, { id: theirs.id, tags: ['geo:x'] }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(await codeOf(() => service.update(delegated, { id: mine.id, name: 'renamed', content_type: '', content: Buffer.alloc(0) }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(await codeOf(() => service.delete(delegated, { id: mine.id }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect((await service.get(bob, { id: theirs.id, without_content: true })).tags).to.deep.equal([]);
  });

  it('never lets a service token own an image', async () => {
    expect(await codeOf(() => service.create(token('spiffe://twokey.local/ns/x/sa/y', ['images:write'], 'service'), upload))).to.equal('ERR_RESOURCE_FORBIDDEN');
  });

  it('answers every filter combination, updates, tags and deletes', async () => {
    const own = await open({ now: () => 1_000 });
    const put = (owner: string, name: string, tags: string[]) => own.create({ owner, name, contentType: 'image/png', content: Buffer.from(name), tags });
    const a1 = await put('alice', 'a1', ['x']);
    await put('alice', 'a2', ['y']);
    await put('bob', 'b1', ['x']);
    const names = async (owner: string | undefined, tag: string | undefined) => (await own.list({ owner, tag, afterSeq: 0, limit: 10 })).images.map((i) => i.name);
    expect(await names(undefined, undefined)).to.deep.equal(['a1', 'a2', 'b1']);
    expect(await names('alice', undefined)).to.deep.equal(['a1', 'a2']);
    expect(await names(undefined, 'x')).to.deep.equal(['a1', 'b1']);
    expect(await names('alice', 'x')).to.deep.equal(['a1']);
    expect(await names('bob', 'y')).to.deep.equal([]);
    // Sequences are per store: the beforeEach repository shares the PostgreSQL database, not the counter's start.
    const all = await own.list({ owner: undefined, tag: undefined, afterSeq: 0, limit: 10 });
    expect(all.lastSeq).to.be.a('number');
    const page = await own.list({ owner: undefined, tag: undefined, afterSeq: 0, limit: 1 });
    expect(page).to.include({ more: true });
    expect(page.images.map((i) => i.name)).to.deep.equal(['a1']);
    expect((await own.update(a1.id, { content: Buffer.from('new') }))?.content).to.equal(undefined);
    expect((await own.get(a1.id, true))?.content?.toString()).to.equal('new');
    expect((await own.get(a1.id, false))?.sizeBytes).to.equal(3);
    expect((await own.setTags(a1.id, ['z']))?.tags).to.deep.equal(['z']);
    expect(await own.delete(a1.id)).to.equal(true);
    expect(await own.delete(a1.id)).to.equal(false);
    expect(await own.update(a1.id, { name: 'gone' })).to.equal(undefined);
    expect((await own.eventsAfter(0, 10)).map((e) => e.type)).to.deep.equal(['created', 'created', 'created', 'updated', 'updated', 'deleted']);
  });

  it('logs created, updated and deleted events in order, durably', async () => {
    const image = await service.create(alice, upload);
    await service.setTags(alice, { id: image.id, tags: ['b', 'a', 'a'] });
    await service.delete(alice, { id: image.id });
    const reopened = await open();
    const events = await reopened.eventsAfter(0, 10);
    expect(events.map((e) => [e.sequence, e.type, e.owner])).to.deep.equal([[1, 'created', 'alice'], [2, 'updated', 'alice'], [3, 'deleted', 'alice']]);
  });

  describe('request ids (AIP-155)', () => {
    const id1 = '6f1c2a4e-3b7d-4c1a-9e2f-0a1b2c3d4e5f';
    const id2 = '0e7a7c9a-58a4-4b8e-8f39-5d2f0c0d4a11';
    const count = async (r: ImageRepository) => (await r.list({ owner: undefined, tag: undefined, afterSeq: 0, limit: 200 })).images.length;

    it('a repeat from the same subject returns the first image and stores nothing new', async () => {
      const first = await service.create(alice, { ...upload, request_id: id1 });
      const again = await service.create(alice, { ...upload, request_id: id1.toUpperCase() });
      expect(again.id).to.equal(first.id);
      expect(await count(repo)).to.equal(1);
      expect((await repo.eventsAfter(0, 10)).map((e) => e.type)).to.deep.equal(['created']);
      // Without an id, nothing is remembered: each call stores.
      await service.create(alice, upload);
      await service.create(alice, upload);
      expect(await count(repo)).to.equal(3);
    });

    it("another subject's same id is a different request: never the first subject's image", async () => {
      const mine = await service.create(alice, { ...upload, request_id: id1 });
      const theirs = await service.create(bob, { ...upload, request_id: id1 });
      expect(theirs.id).to.not.equal(mine.id);
      expect(theirs.owner).to.equal('bob');
      expect(await count(repo)).to.equal(2);
    });

    it('refuses the same id with a different request or method (ERR_REQUEST_ID_REUSED), and an id that is not a UUID', async () => {
      const first = await service.create(alice, { ...upload, request_id: id1 });
      const reused = await service.create(alice, { ...upload, name: 'other.jpg', request_id: id1 }).catch((e: unknown) => e as { code: string; message: string });
      expect(reused).to.include({ code: 'ERR_REQUEST_ID_REUSED' });
      expect((reused as { message: string }).message).to.match(/request_id .* was already used for a different CreateImage request/);
      const content = await service.create(alice, { ...upload, content: Buffer.from([0xff, 0xd8, 2]), request_id: id1 }).catch((e: unknown) => e as { code: string });
      expect(content).to.include({ code: 'ERR_REQUEST_ID_REUSED' });
      expect(await codeOf(() => service.setTags(alice, { id: first.id, tags: ['x'], request_id: id1 }))).to.equal('ERR_REQUEST_ID_REUSED');
      expect(await codeOf(() => service.create(alice, { ...upload, request_id: 'not-a-uuid' }))).to.equal('ERR_REQUEST_INVALID');
      expect(await count(repo)).to.equal(1);
    });

    it('a keyed SetTags repeated writes once, even after the tags changed since', async () => {
      const image = await service.create(alice, upload);
      await service.setTags(alice, { id: image.id, tags: ['a'], request_id: id2 });
      await service.setTags(alice, { id: image.id, tags: ['b'] });
      const replay = await service.setTags(alice, { id: image.id, tags: ['a'], request_id: id2 });
      expect(replay.tags).to.deep.equal(['b']);
      expect((await repo.eventsAfter(0, 10)).map((e) => e.type)).to.deep.equal(['created', 'updated', 'updated']);
    });

    it('a repeat of a create whose image was deleted since is NOT_FOUND, not a new image', async () => {
      const first = await service.create(alice, { ...upload, request_id: id1 });
      await service.delete(alice, { id: first.id });
      expect(await codeOf(() => service.create(alice, { ...upload, request_id: id1 }))).to.equal('ERR_RESOURCE_NOT_FOUND');
      expect(await count(repo)).to.equal(0);
    });

    it('forgets a key after its lifetime: a repeat then stores again, and pruning removes it', async () => {
      let now = 1_000_000;
      const r = await open({ now: () => now, requestKeyTtlMs: 60_000 });
      const s = new ImageService(r);
      const first = await s.create(alice, { ...upload, request_id: id1 });
      await s.create(bob, { ...upload, request_id: id2 });
      now += 59_999;
      expect((await s.create(alice, { ...upload, request_id: id1 })).id).to.equal(first.id);
      now += 1;
      const later = await s.create(alice, { ...upload, request_id: id1 });
      expect(later.id).to.not.equal(first.id);
      // That keyed write pruned both expired keys on its way (at most once a minute); the new one stays for its lifetime.
      expect(await r.pruneRequestKeys()).to.equal(0);
      now += 60_000;
      expect(await r.pruneRequestKeys()).to.equal(1);
      expect(await r.pruneRequestKeys()).to.equal(0);
      expect(await count(r)).to.equal(3);
    });

    if (fx.engine === 'postgres') {
      it('two replicas sent the same keyed upload at once store it once', async () => {
        const replicas = [new ImageService(await open()), new ImageService(await open())];
        const ids = Array.from({ length: 10 }, (_, i) => `6f1c2a4e-3b7d-4c1a-9e2f-0a1b2c3d4e${(10 + i).toString(16).padStart(2, '0')}`);
        const results = await Promise.all(ids.flatMap((id) => replicas.map((s) => s.create(alice, { ...upload, request_id: id }))));
        for (let i = 0; i < ids.length; i++) expect(results[2 * i]!.id).to.equal(results[2 * i + 1]!.id);
        expect(await count(repo)).to.equal(ids.length);
      });
    }
  });

  it('a watcher on one repository delivers every event written through another, in sequence, and resumes from a cursor', async function () {
    this.timeout(30_000);
    const writerA = await open();
    const writerB = await open();
    const watcher = await open();
    const seen: ImageEventRecord[] = [];
    const controller = new AbortController();
    const TOTAL = 40;
    let reached: () => void = () => undefined;
    const all = new Promise<void>((resolve) => (reached = resolve));
    const feed = followEvents(
      watcher,
      0,
      (e) => {
        seen.push(e);
        if (seen.length === TOTAL) reached();
        return true;
      },
      async () => undefined,
      controller.signal,
    );
    // Concurrent writers through two repositories (two replicas on PostgreSQL).
    await Promise.all(
      Array.from({ length: TOTAL / 2 }, (_, i) =>
        Promise.all([
          writerA.create({ owner: 'alice', name: `a${i}`, contentType: 'image/png', content: Buffer.from('x'), tags: [] }),
          writerB.create({ owner: 'bob', name: `b${i}`, contentType: 'image/png', content: Buffer.from('y'), tags: [] }),
        ]),
      ),
    );
    await all;
    controller.abort();
    await feed;
    expect(seen.map((e) => e.sequence)).to.deep.equal(Array.from({ length: TOTAL }, (_, i) => i + 1));
    const resumed = await watcher.eventsAfter(seen[24]!.sequence, 100);
    expect(resumed.map((e) => e.sequence)).to.deep.equal(seen.slice(25).map((e) => e.sequence));
  });
});

describe('image store on SQLite: statements', () => {
  it('prepares every statement once, when the repository is made', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(`${tmpdir()}/twokey-images-`);
    const db = openImageDatabase(imageDatabasePath(dir));
    try {
      let prepared = 0;
      const prepare = db.prepare.bind(db);
      db.prepare = ((sql: string) => {
        prepared += 1;
        return prepare(sql);
      }) as typeof db.prepare;
      const own = new SqliteImageRepository(db, { now: () => 1_000 });
      const madeWith = prepared;
      const a1 = await own.create({ owner: 'alice', name: 'a1', contentType: 'image/png', content: Buffer.from('a'), tags: ['x'] });
      for (const owner of [undefined, 'alice']) for (const tag of [undefined, 'x']) await own.list({ owner, tag, afterSeq: 0, limit: 10 });
      await own.update(a1.id, { name: 'b' });
      await own.setTags(a1.id, ['y']);
      const key = { subject: 'alice', requestId: '6f1c2a4e-3b7d-4c1a-9e2f-0a1b2c3d4e5f', method: 'CreateImage', fingerprint: 'f' };
      await own.create({ owner: 'alice', name: 'k', contentType: 'image/png', content: Buffer.from('k'), tags: [] }, key);
      await own.create({ owner: 'alice', name: 'k', contentType: 'image/png', content: Buffer.from('k'), tags: [] }, key);
      await own.setTags(a1.id, ['z'], { ...key, requestId: '0e7a7c9a-58a4-4b8e-8f39-5d2f0c0d4a11', method: 'SetTags' });
      await own.pruneRequestKeys();
      await own.delete(a1.id);
      await own.eventsAfter(0, 10);
      expect(madeWith).to.be.above(0);
      expect(prepared, 'statements prepared after construction').to.equal(madeWith);
    } finally {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
