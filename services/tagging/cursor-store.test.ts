import assert from 'node:assert/strict';
import { forEachEngine, type EngineFixture } from '../../test/postgres/engines.ts';
import type { CursorStore } from './cursor-store.ts';
import { PostgresCursorStore } from './postgres-cursor-store.ts';
import { SqliteCursorStore } from './sqlite-cursor-store.ts';

const TTL = 10_000;

function opener(fx: EngineFixture): () => Promise<CursorStore> {
  return fx.engine === 'sqlite' ? async () => SqliteCursorStore.open(fx.sqlitePath('tagging.db')) : () => PostgresCursorStore.open(fx.postgres());
}

forEachEngine('tagging cursor store', (fx) => {
  const stores: CursorStore[] = [];
  const open = async (): Promise<CursorStore> => {
    const s = await opener(fx)();
    stores.push(s);
    return s;
  };
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
  });

  it('a new cursor starts at 0; only its holder advances it, and the value survives a reopen', async () => {
    const a = await open();
    assert.equal(await a.acquire('log', 'A', 1000, TTL), 0);
    await a.advance('log', 'A', 7, 1001, TTL);
    await assert.rejects(a.advance('log', 'B', 9, 1002, TTL), { code: 'ERR_STORAGE_UNAVAILABLE' });
    await a.close();
    stores.length = 0;
    const again = await open();
    assert.equal(await again.acquire('log', 'A', 1003, TTL), 7);
  });

  it('a second replica waits while the lease runs, takes over when it lapses, and the old holder is then refused', async () => {
    const a = await open();
    const b = await open();
    assert.equal(await a.acquire('log', 'A', 1000, TTL), 0);
    await a.advance('log', 'A', 3, 2000, TTL);
    assert.equal(await b.acquire('log', 'B', 2000 + TTL - 1, TTL), undefined);
    assert.equal(await b.acquire('log', 'B', 2000 + TTL + 1, TTL), 3);
    await assert.rejects(a.advance('log', 'A', 4, 2000 + TTL + 2, TTL), { code: 'ERR_STORAGE_UNAVAILABLE' });
    assert.equal(await a.acquire('log', 'A', 2000 + TTL + 3, TTL), undefined);
  });

  it('a released lease passes at once', async () => {
    const a = await open();
    const b = await open();
    await a.acquire('log', 'A', 1000, TTL);
    await a.advance('log', 'A', 5, 1000, TTL);
    await a.release('log', 'A');
    assert.equal(await b.acquire('log', 'B', 1001, TTL), 5);
  });

  it('replicas racing for a lapsed lease: exactly one wins each round', async () => {
    const a = await open();
    const b = await open();
    for (let round = 0; round < 20; round++) {
      const now = 1_000_000 + round * (TTL + 1);
      const [ra, rb] = await Promise.all([a.acquire('log', 'A', now, TTL), b.acquire('log', 'B', now, TTL)]);
      // Round 0: nobody holds it. Later rounds: the previous lease lapsed exactly now - 1.
      assert.equal([ra, rb].filter((r) => r !== undefined).length, 1, `round ${round}: ${ra} ${rb}`);
    }
  });

  it('two replicas opening a fresh store at once both start (schema created once)', async () => {
    const [a, b] = await Promise.all([open(), open()]);
    assert.equal(await a.acquire('log', 'A', 1, TTL), 0);
    assert.equal(await b.acquire('log', 'B', 2, TTL), undefined);
  });
});
