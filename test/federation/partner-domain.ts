// A partner company in a test: its own CAs and trust domain, its workloads' certificates, and its SPIFFE bundle endpoint on loopback.
import { X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { IssuedWorkload } from '../../certs-ca/certificate-authority.ts';
import { expect } from 'chai';
import { TwokeyError } from '../../services/authz/errors.ts';
import { SpiffeBundle } from '../../services/authz/spiffe-bundle.ts';
import { TestPki } from '../authz/mesh-fixtures.ts';

export const PARTNER_TD = 'partner.example';
export const ENDPOINT_ID = `spiffe://${PARTNER_TD}/ns/infra/sa/bundle-endpoint`;

/** What the endpoint answers: a body (any bytes) and a status. */
export interface EndpointAnswer {
  status: number;
  body: string | Buffer;
}

/**
 * The partner side. Its CAs are TestPki instances of the partner trust domain (a second one
 * stands for a rotated root); its bundle endpoint presents an X.509-SVID of ENDPOINT_ID issued by
 * the CA the test chooses, and answers whatever `answer` says (a bundle by default).
 */
export class PartnerDomain {
  readonly cas: TestPki[] = [];
  #server: Server | undefined;
  #port = 0;
  answer: () => EndpointAnswer;
  requests = 0;

  constructor() {
    this.cas.push(TestPki.create(PARTNER_TD));
    this.answer = () => ({ status: 200, body: this.bundleJson([0], 1, 1) });
  }

  /** A new root for the same trust domain (the partner rotating its CA); returns its index. */
  addCa(): number {
    this.cas.push(TestPki.create(PARTNER_TD));
    return this.cas.length - 1;
  }

  root(ca: number): X509Certificate {
    return this.cas[ca]!.ca.certificate;
  }

  /** The SPIFFE bundle of the given CAs, as the partner would publish it. */
  bundleJson(cas: readonly number[], sequence: number, refreshHintSeconds: number): string {
    return SpiffeBundle.fromCertificates(PARTNER_TD, cas.map((i) => this.root(i)), { sequence, refreshHintSeconds }).toString();
  }

  issue(spiffeId: string, grants: readonly string[], ca = 0): IssuedWorkload {
    return this.cas[ca]!.issue(spiffeId, grants);
  }

  /** Starts the bundle endpoint with an SVID from CA `ca`; resolves to its URL. */
  async start(ca = 0): Promise<string> {
    const svid = this.issue(ENDPOINT_ID, [], ca);
    this.#server = createServer({ cert: svid.chainPem, key: svid.keyPem }, (_req, res) => {
      this.requests += 1;
      const { status, body } = this.answer();
      res.writeHead(status, { 'content-type': 'application/json' }).end(body);
    });
    await new Promise<void>((resolve) => this.#server!.listen(this.#port, '127.0.0.1', () => resolve()));
    this.#port = (this.#server.address() as AddressInfo).port;
    return this.url;
  }

  get url(): string {
    return `https://127.0.0.1:${this.#port}/bundle`;
  }

  /** The endpoint now presents an SVID from CA `ca` (after a rotation removed the old root). */
  reissueEndpoint(ca: number, spiffeId = ENDPOINT_ID): void {
    const svid = this.issue(spiffeId, [], ca);
    this.#server!.setSecureContext({ cert: svid.chainPem, key: svid.keyPem });
  }

  /** Takes the endpoint down (the port is kept for start() to come back on). */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server === undefined) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  async cleanup(): Promise<void> {
    await this.stop();
    for (const pki of this.cas) pki.cleanup();
  }
}

/** The ERR_BUNDLE_INVALID that `fn` throws (fails the test if it throws nothing or anything else). */
export function bundleRefusal(fn: () => unknown): TwokeyError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(TwokeyError);
    expect((err as TwokeyError).code).to.equal('ERR_BUNDLE_INVALID');
    return err as TwokeyError;
  }
  throw new Error('expected a refusal');
}
