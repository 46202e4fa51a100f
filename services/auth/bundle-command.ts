// `twokey bundle serve`: our trust domain's SPIFFE bundle endpoint on its own, for partners to fetch.
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { parseDuration } from '../../certs-ca/duration.ts';
import { isTwokeyError } from '../authz/errors.ts';
import { SVID_FILES, certificatesIn } from '../authz/svid-source.ts';
import { SpiffeId } from '../authz/spiffe-id.ts';
import { parseSvid } from '../authz/svid.ts';
import { createBundleServer, PublishedBundle } from './bundle-endpoint.ts';

export const usage = `Usage: twokey bundle serve --trust-domain TD --bundle FILE (--svid-dir DIR | --cert FILE --key FILE)
                           [--listen HOST:PORT] [--refresh-hint DUR]

Serves our trust domain's SPIFFE bundle (a JWK Set of the CA certificates in FILE, PEM) at / and
/.well-known/spiffe-bundle. With --svid-dir the endpoint presents that workload's X.509-SVID
(profile https_spiffe: partners configure its SPIFFE ID); with --cert/--key a certificate for the
endpoint's public host name (profile https_web). FILE is read again every second: a CA added for
rotation, or an old one removed, is published with a higher spiffe_sequence without a restart.
auth serves the same bundle at /.well-known/spiffe-bundle on its HTTPS listener.
`;

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'serve') {
    process.stderr.write(`twokey bundle: ${sub === undefined ? 'a subcommand is required' : `unknown subcommand ${JSON.stringify(sub)}`}\n\n${usage}`);
    return 2;
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: rest,
      options: {
        'trust-domain': { type: 'string' },
        bundle: { type: 'string' },
        'svid-dir': { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        listen: { type: 'string' },
        'refresh-hint': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`twokey bundle serve: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(usage);
    return 0;
  }
  const str = (name: string): string | undefined => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const trustDomain = str('trust-domain');
  const bundleFile = str('bundle');
  const svidDir = str('svid-dir');
  if (trustDomain === undefined || bundleFile === undefined || (svidDir === undefined) === (str('cert') === undefined || str('key') === undefined)) {
    process.stderr.write(`twokey bundle serve: --trust-domain, --bundle and exactly one of --svid-dir or --cert with --key are required\n\n${usage}`);
    return 2;
  }
  try {
    SpiffeId.forTrustDomain(trustDomain);
    const tls =
      svidDir === undefined
        ? { cert: readFileSync(str('cert')!), key: readFileSync(str('key')!) }
        : { cert: readFileSync(`${svidDir}/${SVID_FILES.cert}`), key: readFileSync(`${svidDir}/${SVID_FILES.key}`) };
    if (svidDir !== undefined) {
      const id = parseSvid(Buffer.from(certificatesIn(tls.cert, SVID_FILES.cert)[0]!.raw)).spiffeId;
      if (!id.memberOf(trustDomain)) throw new Error(`the SVID in ${svidDir} names ${id}, outside trust domain ${trustDomain}`);
    }
    const hint = str('refresh-hint');
    let text = readFileSync(bundleFile, 'utf8');
    const published = new PublishedBundle(trustDomain, certificatesIn(Buffer.from(text), bundleFile), {
      refreshHintSeconds: hint === undefined ? 300 : parseDuration(hint, '--refresh-hint'),
    });
    const server = createBundleServer(published, tls);
    const [host, port] = splitHostPort(str('listen') ?? '0.0.0.0:8445');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const poll = setInterval(() => {
      try {
        const next = readFileSync(bundleFile, 'utf8');
        if (next === text) return;
        published.update(certificatesIn(Buffer.from(next), bundleFile));
        text = next;
        process.stdout.write(`${JSON.stringify({ event: 'bundle.updated', sequence: published.current.sequence })}\n`);
      } catch (err) {
        process.stderr.write(`${JSON.stringify({ event: 'bundle.file_refused', err: (err as Error).message })}\n`);
      }
    }, 1000);
    process.stdout.write(`${JSON.stringify({ event: 'bundle.serving', port: (server.address() as AddressInfo).port, trust_domain: trustDomain, sequence: published.current.sequence })}\n`);
    await new Promise<void>((resolve) => {
      const stop = (): void => {
        clearInterval(poll);
        server.close(() => resolve());
        server.closeAllConnections();
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  } catch (err) {
    process.stderr.write(`twokey bundle serve: ${(err as Error).message}${isTwokeyError(err) ? ` [${err.code}]` : ''}\n`);
    return 1;
  }
}

function splitHostPort(address: string): [string, number] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(address.slice(i + 1))];
}
