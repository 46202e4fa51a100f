// Console sessions: random ids, hard server-side expiry, bounded count, and a cookie sent twice trusted never.
import { expect } from 'chai';
import { SESSION_COOKIE, SessionStore, sessionIdFrom } from '../../scripts/console/console-sessions.ts';

describe('console sessions', () => {
  it('ends a session at its expiry whatever the cookie says, and on logout', () => {
    let now = 1_000_000;
    const store = new SessionStore({ ttlMs: 60_000, clock: () => now });
    const { id, session } = store.create('admin');
    expect(id).to.match(/^[A-Za-z0-9_-]{43}$/);
    expect(session.expiresAtMs).to.equal(1_060_000);
    now += 59_999;
    expect(store.get(id)?.subject).to.equal('admin');
    now += 1;
    expect(store.get(id)).to.equal(undefined);
    const second = store.create('admin');
    store.delete(second.id);
    expect(store.get(second.id)).to.equal(undefined);
  });

  it('refuses ids it did not issue, and drops the oldest beyond its bound', () => {
    const store = new SessionStore({ maxSessions: 2 });
    expect(store.get(undefined)).to.equal(undefined);
    expect(store.get('A'.repeat(43))).to.equal(undefined);
    expect(store.get('../../etc/passwd')).to.equal(undefined);
    const first = store.create('a');
    store.create('b');
    store.create('c');
    expect(store.get(first.id)).to.equal(undefined);
  });

  it('reads the cookie only when it is sent once', () => {
    expect(sessionIdFrom(`theme=dark; ${SESSION_COOKIE}=abc`)).to.equal('abc');
    expect(sessionIdFrom(`${SESSION_COOKIE}=abc; ${SESSION_COOKIE}=def`)).to.equal(undefined);
    expect(sessionIdFrom('other=1')).to.equal(undefined);
    expect(sessionIdFrom(undefined)).to.equal(undefined);
  });
});
