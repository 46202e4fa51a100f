// Load admission's pure parts: limit validation, all-or-nothing claims, token buckets, and line folding windows.
import { expect } from 'chai';
import { HeldCounter, RateLimiter, claimAll, envLimit, positiveLimit, takeToken } from './admission.ts';
import { LineFolder, foldStep, type FoldSummary } from './log-folding.ts';

describe('admission', () => {
  for (const bad of [0, -1, 1.5, Number.NaN, Infinity, '3', null]) {
    it(`refuses the limit ${String(bad)} with ERR_CONFIG_INVALID naming the setting`, () => {
      expect(() => positiveLimit('TWOKEY_X', bad)).to.throw(/^TWOKEY_X must be a positive integer, not /).with.property('code', 'ERR_CONFIG_INVALID');
    });
  }

  it('reads limits from the environment: absent -> the default; 0, negative, fractional or not a number -> refused', () => {
    expect(envLimit({}, 'TWOKEY_X', 7)).to.equal(7);
    expect(envLimit({ TWOKEY_X: '12' }, 'TWOKEY_X', 7)).to.equal(12);
    for (const bad of ['0', '-5', '2.5', 'ten', '1e3']) {
      expect(() => envLimit({ TWOKEY_X: bad }, 'TWOKEY_X', 7), bad).to.throw(/TWOKEY_X must be a positive integer/).with.property('code', 'ERR_CONFIG_INVALID');
    }
  });

  it('claims all counters or none, and forgets keys that hold nothing', () => {
    const total = new HeldCounter('total', 3);
    const perUser = new HeldCounter('per_user', 1);
    expect(claimAll([[total, ''], [perUser, 'alice']])).to.equal(undefined);
    expect(claimAll([[total, ''], [perUser, 'alice']])).to.equal(perUser);
    expect(total.held('')).to.equal(1);
    expect(claimAll([[total, ''], [perUser, 'bob']], 1)).to.equal(undefined);
    perUser.remove('alice');
    expect(perUser.keys).to.equal(1);
  });

  it('token buckets refill at their rate up to the burst; a full map shares one overflow bucket', () => {
    let b = takeToken(undefined, 0, 1, 2);
    expect(b.ok).to.equal(true);
    b = takeToken(b.bucket, 0, 1, 2);
    expect(b.ok).to.equal(true);
    expect(takeToken(b.bucket, 500, 1, 2).ok).to.equal(false);
    expect(takeToken(b.bucket, 1000, 1, 2).ok).to.equal(true);
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 1, burst: 1, maxKeys: 2, now: () => now });
    expect([limiter.take('a'), limiter.take('b'), limiter.take('c'), limiter.take('d')]).to.deep.equal([true, true, true, false]);
    now = 10_000;
    expect(limiter.take('e')).to.equal(true);
  });

  it('folding: the first lines of a window are written, the rest counted; a new window reports the last', () => {
    const policy = { windowMs: 100, linesPerWindow: 2, maxKeys: 10 };
    let step = foldStep(undefined, 0, policy);
    expect(step.write).to.equal(true);
    step = foldStep(step.window, 10, policy);
    expect(step.write).to.equal(true);
    step = foldStep(step.window, 20, policy);
    expect(step.write).to.equal(false);
    const next = foldStep(step.window, 100, policy);
    expect(next.write).to.equal(true);
    expect(next.ended).to.include({ folded: 1, written: 2 });
  });

  it('a full folder puts new keys under one shared key; its summary names it', () => {
    const summaries: FoldSummary[] = [];
    const folder = new LineFolder((s) => summaries.push(s), { policy: { windowMs: 100, linesPerWindow: 1, maxKeys: 1 }, now: () => 0, sweepTimer: false });
    expect(folder.admit('a', () => ({ key: 'a' }))).to.equal(true);
    expect(folder.admit('b', () => ({ key: 'b' }))).to.equal(true);
    expect(folder.admit('c', () => ({ key: 'c' }))).to.equal(false);
    folder.close();
    expect(summaries.map((s) => [s.fields['key'], s.folded])).to.deep.equal([['(other)', 1]]);
  });
});
