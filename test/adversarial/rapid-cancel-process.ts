// A child process that floods the gateway with complete ListImages calls each reset at once (RST_STREAM),
// so the test process measuring the legitimate client is not also the one generating the flood.
// Usage: node --import tsx rapid-cancel-process.ts <json {port, caFile, token, connections, durationMs, idPrefix}>
import { readFileSync } from 'node:fs';
import { connect as h2connect, constants as h2, type ClientHttp2Session } from 'node:http2';

const { port, caFile, token, connections, durationMs, idPrefix } = JSON.parse(process.argv[2]!) as {
  port: number;
  caFile: string;
  token: string;
  connections: number;
  durationMs: number;
  idPrefix: string;
};
const ca = readFileSync(caFile);
// An empty ListImagesRequest in a gRPC frame: uncompressed, length 0.
const body = Buffer.alloc(5);

async function open(): Promise<ClientHttp2Session> {
  const s = h2connect(`https://127.0.0.1:${port}`, { ca, servername: 'localhost', checkServerIdentity: () => undefined });
  s.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    s.once('connect', () => resolve());
    s.once('error', reject);
  });
  return s;
}

let sent = 0;
let reconnects = 0;
const until = Date.now() + durationMs;
await Promise.all(
  Array.from({ length: connections }, async (_, n) => {
    let s = await open();
    while (Date.now() < until) {
      if (s.destroyed || s.closed) {
        reconnects++;
        s = await open().catch(() => s);
      }
      for (let i = 0; i < 20 && !s.destroyed; i++) {
        try {
          const req = s.request({
            [h2.HTTP2_HEADER_METHOD]: 'POST',
            [h2.HTTP2_HEADER_PATH]: '/twokey.images.v1.ImageStore/ListImages',
            'content-type': 'application/grpc',
            te: 'trailers',
            authorization: `Bearer ${token}`,
            'x-request-id': `${idPrefix}${n}-${sent}`,
          });
          req.on('error', () => undefined);
          req.end(body);
          // The whole request is written; reset the stream at once.
          req.close(h2.NGHTTP2_CANCEL);
          sent++;
        } catch {
          break;
        }
      }
      await new Promise((r) => setImmediate(r));
    }
    s.destroy();
  }),
);
process.stdout.write(`${JSON.stringify({ sent, reconnects })}\n`);
