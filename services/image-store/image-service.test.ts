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

  it('never lets a service token own an image', () => {
    expect(codeOf(() => service.create(token('spiffe://twokey.local/ns/x/sa/y', ['images:write'], 'service'), upload))).to.equal('ERR_RESOURCE_FORBIDDEN');
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
