// The assumption behind the gateway's upstream cancel budget: Node's HTTP/2 server closes a connection whose client resets too many streams.
import { connect, createServer, constants as h2, type ClientHttp2Session, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { UPSTREAM_CANCEL_BUDGET } from '../../services/gateway/gateway-limits.ts';

/** Resets `count` streams on one connection while a slow call is in flight on it: how that call ended and whether the server sent GOAWAY. */
async function resetsBesideACall(server: Http2Server, count: number): Promise<{ goaway: number | undefined; call: string }> {
  const client: ClientHttp2Session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  client.on('error', () => undefined);
  let goaway: number | undefined;
  client.on('goaway', (code) => (goaway = code));
  const call = new Promise<string>((resolve) => {
    const req = client.request({ ':path': '/slow' });
    req.on('error', (err) => resolve(err.message));
    req.on('response', () => resolve('answered'));
    req.end();
  });
  for (let i = 0; i < count && !client.destroyed; i++) {
    const req = client.request({ ':path': '/reset' });
    req.on('error', () => undefined);
    req.end();
    req.close(h2.NGHTTP2_CANCEL);
    if (i % 100 === 99) await new Promise((r) => setImmediate(r));
  }
  const ended = await call;
  client.destroy();
  return { goaway, call: ended };
}

describe('adversarial: the upstream cancel budget stays under a Node server rapid-reset limit', () => {
  let server: Http2Server;
  before(async () => {
    server = createServer();
    server.on('stream', (stream, headers) => {
      stream.on('error', () => undefined);
      setTimeout(() => {
        if (!stream.closed) {
          stream.respond({ ':status': 200 });
          stream.end();
        }
      }, headers[':path'] === '/slow' ? 500 : 5);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('1,200 resets at once: GOAWAY INTERNAL_ERROR, and the other call on the connection fails "Session closed with error code 2"', async () => {
    const { goaway, call } = await resetsBesideACall(server, 1200);
    expect(goaway).to.equal(h2.NGHTTP2_INTERNAL_ERROR);
    expect(call).to.equal('Session closed with error code 2');
  });

  it(`the gateway's burst (${UPSTREAM_CANCEL_BUDGET.burst}) at once: no GOAWAY, the other call answered`, async () => {
    const { goaway, call } = await resetsBesideACall(server, UPSTREAM_CANCEL_BUDGET.burst);
    expect(goaway).to.equal(undefined);
    expect(call).to.equal('answered');
  });
});
