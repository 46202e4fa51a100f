// Shared plumbing for the end-to-end tests: a real mesh in a fresh temporary state directory,
// started exactly as `npm start` starts it, and readers for its decision logs.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Metadata, status, type Client, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { unary } from '../../services/mesh-runtime/protos.ts';
import { gatewayClient, workloadClient, type ServiceClientKind } from '../../scripts/local-mesh/clients.ts';
import { startLocalMesh, type LocalMesh } from '../../scripts/local-mesh/local-mesh.ts';

/** Code -> name: grpc-js's status is a numeric enum, which maps both ways. */
export const STATUS_NAMES: Readonly<Record<number, string | undefined>> = status;

export interface TestMesh {
  mesh: LocalMesh;
  stateDir: string;
  gateway(service: ServiceClientKind): Client;
  workload(name: string, service: ServiceClientKind): Promise<Client>;
  login(user: string): Promise<string>;
  close(): Promise<void>;
}

export async function startTestMesh(opts: { stateDir?: string; cleanerInterval?: string; env?: Record<string, string>; replicas?: number } = {}): Promise<TestMesh> {
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'twokey-e2e-'));
  let mesh: LocalMesh;
  try {
    mesh = await startLocalMesh({
      stateDir,
      cleanerInterval: opts.cleanerInterval ?? '2s',
      healthTimeoutMs: 60_000,
      ...(opts.env === undefined ? {} : { env: opts.env }),
      ...(opts.replicas === undefined ? {} : { replicas: opts.replicas }),
    });
  } catch (err) {
    if (opts.stateDir === undefined) rmSync(stateDir, { recursive: true, force: true });
    throw err;
  }
  const closers: (() => void)[] = [];
  const gateways = new Map<string, Client>();
  const harness: TestMesh = {
    mesh,
    stateDir,
    gateway(service) {
      let client = gateways.get(service);
      if (client === undefined) {
        client = gatewayClient(mesh.endpoints, service);
        gateways.set(service, client);
        closers.push(() => client!.close());
      }
      return client;
    },
    async workload(name, service) {
      const { client, close } = await workloadClient(mesh.endpoints, name, service);
      closers.push(close);
      return client;
    },
    async login(user) {
      return (await unary<{ access_token: string }>(harness.gateway('auth'), 'Login', { username: user, password: mesh.users[user] })).access_token;
    },
    async close() {
      for (const close of closers.splice(0)) close();
      gateways.clear();
      await mesh.stop();
    },
  };
  return harness;
}

/** Metadata with a bearer token and a request id the decision log will carry. */
export function withToken(token: string | undefined, requestId?: string): Metadata {
  const md = new Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  if (requestId !== undefined) md.set('x-request-id', requestId);
  return md;
}

/** Awaits a call that must fail with `code`; returns the status details. */
export async function expectStatus(call: Promise<unknown>, code: keyof typeof status): Promise<string> {
  try {
    await call;
  } catch (err) {
    const e = err as ServiceError;
    expect(STATUS_NAMES[e.code], `status (details: ${e.details})`).to.equal(code);
    return e.details;
  }
  expect.fail(`expected ${code}, but the call succeeded`);
}

export function decisionIdIn(details: string): string {
  const match = /\(decision ([0-9a-f-]{36})\)/.exec(details);
  expect(match, `a decision id in ${JSON.stringify(details)}`).to.not.equal(null);
  return match![1]!;
}

export type LogLine = Record<string, unknown>;

export function logLines(mesh: LocalMesh, service: string): LogLine[] {
  return readFileSync(mesh.layout.logFile(service), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

/** The interceptor's decision line with this id, from any service's log. */
export function decisionLine(mesh: LocalMesh, decisionId: string, event = 'authz.decision'): LogLine {
  const found = ['auth', 'image-store', 'tagging']
    .flatMap((s) => logLines(mesh, s))
    .filter((l) => l['decision_id'] === decisionId && l['event'] === event);
  expect(found, `${event} line for decision ${decisionId} in the logs`).to.have.length(1);
  return found[0]!;
}

export async function eventually<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`);
}

export function removeState(stateDir: string): void {
  rmSync(stateDir, { recursive: true, force: true });
}

/**
 * Polls `call` until it fails with `code` (failing the test after `boundMs`, default 10 s): prints
 * how long that took from `since` (default: now; `from` names that moment) and returns the time and
 * the refusal's details. The figure is printed, never asserted: the machine is shared.
 */
export async function timeUntilRefused(
  what: string,
  code: string,
  call: () => Promise<unknown>,
  opts: { since?: number; from?: string; boundMs?: number } = {},
): Promise<{ ms: number; details: string }> {
  const since = opts.since ?? Date.now();
  const boundMs = opts.boundMs ?? 10_000;
  for (;;) {
    try {
      await call();
    } catch (err) {
      const e = err as { code?: number; details?: string };
      if (e.code !== undefined && STATUS_NAMES[e.code] === code) {
        const ms = Date.now() - since;
        console.log(`      ${what}: refused (${code}) ${ms} ms after ${opts.from ?? 'the first try'}`);
        return { ms, details: e.details ?? '' };
      }
    }
    if (Date.now() - since > boundMs) expect.fail(`${what}: still not refused with ${code} after ${boundMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
