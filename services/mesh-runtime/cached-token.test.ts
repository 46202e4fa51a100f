// Tokens from auth are reused until 80% of their lifetime, fetched once for concurrent callers.
import { expect } from 'chai';
import { CachedToken } from './cached-token.ts';

describe('cached token', () => {
  it('reuses a token until 80% of its lifetime, then fetches a new one', async () => {
    let now = 0;
    let fetches = 0;
    const cached = new CachedToken(async () => ({ access_token: `t${++fetches}`, expires_in: '100' }), () => now);
    expect(await cached.get()).to.equal('t1');
    now = 79_999;
    expect(await cached.get()).to.equal('t1');
    now = 80_000;
    expect(await cached.get()).to.equal('t2');
  });

  it('shares one fetch between concurrent callers and retries after a failure', async () => {
    let fetches = 0;
    let fail = true;
    const cached = new CachedToken(async () => {
      fetches++;
      if (fail) throw new Error('auth unavailable');
      return { access_token: 'ok', expires_in: 60 };
    });
    const results = await Promise.allSettled([cached.get(), cached.get()]);
    expect(results.map((r) => r.status)).to.deep.equal(['rejected', 'rejected']);
    expect(fetches).to.equal(1);
    fail = false;
    expect(await cached.get()).to.equal('ok');
    expect(fetches).to.equal(2);
  });

  it('fetches again after the held token is invalidated, and ignores a token it no longer holds', async () => {
    let fetches = 0;
    const cached = new CachedToken(async () => ({ access_token: `t${++fetches}`, expires_in: 600 }));
    expect(await cached.get()).to.equal('t1');
    cached.invalidate('t1');
    expect(await cached.get()).to.equal('t2');
    cached.invalidate('t1');
    expect(await cached.get()).to.equal('t2');
    expect(fetches).to.equal(2);
  });
});
