// ImageStore handler logic over a real SQLite file: ownership, ':any' scopes, limits, events.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { VerifiedToken } from '../authz/decision.ts';
import { imageDatabasePath, openImageDatabase, type ImageDatabase } from './image-database.ts';
import { LIMITS } from './image-input.ts';
import { ImageRepository } from './image-repository.ts';
import { ImageService } from './image-service.ts';

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

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as { code: string }).code;
  }
  return 'none';
}

describe('image store service logic', () => {
  let dir: string;
  let db: ImageDatabase;
  let repo: ImageRepository;
  let service: ImageService;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-images-'));
    db = openImageDatabase(imageDatabasePath(dir));
    repo = new ImageRepository(db);
    service = new ImageService(repo);
  });
  afterEach(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("denies another user's image and a missing image alike, so existence does not leak", () => {
    const image = service.create(alice, upload);
    expect(codeOf(() => service.get(bob, { id: image.id, without_content: false }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(codeOf(() => service.get(bob, { id: `img_${'0'.repeat(32)}`, without_content: false }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(codeOf(() => service.delete(bob, { id: image.id }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(codeOf(() => service.get(cleaner, { id: `img_${'0'.repeat(32)}`, without_content: false }))).to.equal('ERR_RESOURCE_NOT_FOUND');
  });

  it('lists only the caller’s own images unless it holds images:read:any', () => {
    service.create(alice, upload);
    service.create(bob, { ...upload, tags: ['flagged'] });
    expect(service.list(alice, { owner: '', tag: '', page_size: 0, page_token: '' }).images.map((i) => i.owner)).to.deep.equal(['alice']);
    expect(codeOf(() => service.list(alice, { owner: 'bob', tag: '', page_size: 0, page_token: '' }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(service.list(cleaner, { owner: '', tag: 'flagged', page_size: 0, page_token: '' }).images.map((i) => i.owner)).to.deep.equal(['bob']);
  });

  it('pages with opaque tokens and rejects forged ones', () => {
    for (let i = 0; i < 3; i++) service.create(alice, upload);
    const first = service.list(alice, { owner: '', tag: '', page_size: 2, page_token: '' });
    expect(first.images).to.have.length(2);
    const second = service.list(alice, { owner: '', tag: '', page_size: 2, page_token: first.next_page_token });
    expect(second.images).to.have.length(1);
    expect(second.next_page_token).to.equal('');
    expect(codeOf(() => service.list(alice, { owner: '', tag: '', page_size: 2, page_token: 'p1' }))).to.equal('ERR_REQUEST_INVALID');
  });

  it('refuses oversized content with a size error, and bad content types', () => {
    const big = Buffer.alloc(LIMITS.maxContentBytes + 1);
    expect(codeOf(() => service.create(alice, { ...upload, content: big }))).to.equal('ERR_RESOURCE_TOO_LARGE');
    expect(codeOf(() => service.create(alice, { ...upload, content_type: 'text/html' }))).to.equal('ERR_REQUEST_INVALID');
  });

  it("lets a delegated images:tag token tag only its user's images, and do nothing else", () => {
    const mine = service.create(alice, upload);
    const theirs = service.create(bob, upload);
    const delegated: VerifiedToken = { ...token('alice', ['images:tag'], 'delegated'), actorChain: ['spiffe://twokey.local/ns/twokey/sa/tagging'] };
    expect(service.setTags(delegated, { id: mine.id, tags: ['geo:x'] }).tags).to.deep.equal(['geo:x']);
    expect(codeOf(() => service.setTags(delegated, { id: theirs.id, tags: ['geo:x'] }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(codeOf(() => service.update(delegated, { id: mine.id, name: 'renamed', content_type: '', content: Buffer.alloc(0) }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(codeOf(() => service.delete(delegated, { id: mine.id }))).to.equal('ERR_RESOURCE_FORBIDDEN');
    expect(service.get(bob, { id: theirs.id, without_content: true }).tags).to.deep.equal([]);
  });

  it('never lets a service token own an image', () => {
    expect(codeOf(() => service.create(token('spiffe://twokey.local/ns/x/sa/y', ['images:write'], 'service'), upload))).to.equal('ERR_RESOURCE_FORBIDDEN');
  });

  it('answers every filter combination from statements prepared once, when the repository is made', () => {
    let prepared = 0;
    const prepare = db.prepare.bind(db);
    db.prepare = ((sql: string) => {
      prepared += 1;
      return prepare(sql);
    }) as typeof db.prepare;
    const own = new ImageRepository(db, { now: () => 1_000 });
    const madeWith = prepared;
    const put = (owner: string, name: string, tags: string[]) => own.create({ owner, name, contentType: 'image/png', content: Buffer.from(name), tags });
    const a1 = put('alice', 'a1', ['x']);
    put('alice', 'a2', ['y']);
    put('bob', 'b1', ['x']);
    const names = (owner: string | undefined, tag: string | undefined, afterSeq = 0, limit = 10) => own.list({ owner, tag, afterSeq, limit }).images.map((i) => i.name);
    for (let round = 0; round < 2; round++) {
      expect(names(undefined, undefined)).to.deep.equal(['a1', 'a2', 'b1']);
      expect(names('alice', undefined)).to.deep.equal(['a1', 'a2']);
      expect(names(undefined, 'x')).to.deep.equal(['a1', 'b1']);
      expect(names('alice', 'x')).to.deep.equal(['a1']);
      expect(names('bob', 'y')).to.deep.equal([]);
      expect(own.list({ owner: undefined, tag: undefined, afterSeq: 1, limit: 1 })).to.include({ lastSeq: 2, more: true });
    }
    expect(own.update(a1.id, { content: Buffer.from('new') })?.content).to.equal(undefined);
    expect(own.get(a1.id, true)?.content?.toString()).to.equal('new');
    expect(own.setTags(a1.id, ['z'])?.tags).to.deep.equal(['z']);
    expect(own.delete(a1.id)).to.equal(true);
    expect(own.delete(a1.id)).to.equal(false);
    expect(own.update(a1.id, { name: 'gone' })).to.equal(undefined);
    expect(own.eventsAfter(0, 10).map((e) => e.type)).to.deep.equal(['created', 'created', 'created', 'updated', 'updated', 'deleted']);
    expect(madeWith).to.be.above(0);
    expect(prepared, 'statements prepared after construction').to.equal(madeWith);
  });

  it('logs created, updated and deleted events in order, durably', () => {
    const image = service.create(alice, upload);
    service.setTags(alice, { id: image.id, tags: ['b', 'a', 'a'] });
    service.delete(alice, { id: image.id });
    db.close();
    db = openImageDatabase(imageDatabasePath(dir));
    const events = new ImageRepository(db).eventsAfter(0, 10);
    expect(events.map((e) => [e.sequence, e.type, e.owner])).to.deep.equal([[1, 'created', 'alice'], [2, 'updated', 'alice'], [3, 'deleted', 'alice']]);
  });
});
