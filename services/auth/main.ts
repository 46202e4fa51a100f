// The auth service process: Auth over mTLS, JWKS over HTTPS, users and keys in SQLite or PostgreSQL.
import { isIP, type AddressInfo } from 'node:net';
import type { Metadata } from '@grpc/grpc-js';
import { callContext } from '../authz/call-context.ts';
import { TwokeyError } from '../authz/errors.ts';
import { JwksKeySet } from '../authz/jwks.ts';
import { TokenVerifier } from '../authz/token-verifier.ts';
import { postgresConfig } from '../mesh-runtime/database-config.ts';
import { besideMeshListener, dataDir, envAddress, envDurationMs, type Env } from '../mesh-runtime/env.ts';
import { unaryHandler } from '../mesh-runtime/handlers.ts';
import { MeshRuntime } from '../mesh-runtime/mesh-runtime.ts';
import { AuthClient } from '../mesh-runtime/protos.ts';
import type { RunningService } from '../mesh-runtime/running-service.ts';
import { AuthMetrics } from './auth-metrics.ts';
import { authPolicyFromRegistry } from './auth-policy.ts';
import { AuthService, type CallerWorkload } from './auth-service.ts';
import { openAuthStorage } from './auth-storage.ts';
import { certificatesIn, SVID_FILES } from '../authz/svid-source.ts';
import { PublishedBundle } from './bundle-endpoint.ts';
import { createJwksHttpsServer } from './jwks-https.ts';
import { LoginThrottle } from './login-throttle.ts';
import { revocationHandlers } from './revocation-handlers.ts';
import { RevocationPublisher } from './revocation-publisher.ts';
import { SigningKeys } from './signing-keys.ts';
import { TokenMinter } from './token-minter.ts';
import { UserStore } from './user-store.ts';
import { isUsername } from './username.ts';

/** The verified mTLS peer of the call being served. */
function caller(): CallerWorkload {
  const peer = callContext().peer;
  if (peer === undefined) throw new TwokeyError('ERR_PEER_CERT_MISSING', 'no verified peer certificate');
  return { spiffeId: peer.spiffeId.toString(), thumbprint: peer.thumbprint };
}

/**
 * Where a login attempt comes from, for the throttle: the calling workload, and for the gateway
 * alone the end-user address it reports in x-forwarded-for. Only the workload named `gateway` in
 * the registry may assert an address (its certificate proves who sends the header, and it never
 * relays the client's own); from any other caller the header is ignored, so no workload can charge
 * its guesses to someone else's address.
 */
export function loginSource(callerId: string, gatewayId: string | undefined, metadata: Metadata): string {
  if (callerId !== gatewayId) return `${callerId}|direct`;
  const reported = metadata.get('x-forwarded-for');
  const address = reported.length === 1 && typeof reported[0] === 'string' && isIP(reported[0]) !== 0 ? reported[0] : 'unknown';
  return `${callerId}|${address}`;
}

export async function serve(env: Env): Promise<RunningService> {
  const runtime = await MeshRuntime.start('auth', env, ['twokey.auth.v1.Auth']);
  try {
    const log = runtime.logger;
    const policy = authPolicyFromRegistry(runtime.registry);
    const gatewayId = runtime.registry.workloads.find((w) => w.name === 'gateway')?.spiffeId.toString();
    const pg = postgresConfig(env);
    const storage = await openAuthStorage(pg === undefined ? { dataDir: dataDir(env) } : { postgres: pg });
    runtime.onClose(() => storage.close());
    runtime.health.watchDependency(() => storage.ping());
    // Auth verifies subject tokens with its own published keys, exactly as every other service does.
    let ownKeys: JwksKeySet | undefined;
    let republish: (() => void) | undefined;
    const keys = new SigningKeys(storage.keys, {
      rotationMs: envDurationMs(env, 'TWOKEY_KEY_ROTATION', '24h'),
      onRotated: (kid, why) => {
        log.info({ event: 'keys.rotated', kid, why }, 'signing key rotated');
        void ownKeys?.refresh().catch(() => undefined);
        // The next set names the new key: services that missed it fetch the JWK Set now, not at their next refresh.
        republish?.();
      },
    });
    await keys.current();
    ownKeys = new JwksKeySet({ fetch: () => keys.jwks(), cooldownMs: 0, refreshIntervalMs: 0 });
    await ownKeys.start();
    const verifierKeys = ownKeys;
    const service = new AuthService({
      policy,
      users: new UserStore(storage.users),
      throttle: new LoginThrottle(storage.failures),
      keys,
      minter: new TokenMinter({ keys, issuer: policy.issuer }),
      verifySubjectToken: (token, audiences) =>
        new TokenVerifier({ keys: verifierKeys, issuer: policy.issuer, audiences, maxActorDepth: policy.maxDelegationDepth }).verify(token),
    });

    // Due rotations also happen on the next mint; this timer covers quiet periods.
    const timer = setInterval(() => void keys.current().catch((err) => log.error({ err }, 'scheduled rotation failed')), 60_000);
    timer.unref();
    runtime.onClose(() => clearInterval(timer));
    // On demand: `kill -HUP <pid>`.
    const onHup = (): void => void keys.rotate('SIGHUP').catch((err) => log.error({ err }, 'rotation failed'));
    process.on('SIGHUP', onHup);
    runtime.onClose(() => void process.off('SIGHUP', onHup));

    const metrics = new AuthMetrics(runtime.metrics);
    const revocations = new RevocationPublisher({
      store: storage.revocations,
      keys,
      heartbeatMs: envDurationMs(env, 'TWOKEY_REVOCATION_HEARTBEAT', '2s'),
      onError: (err) => log.error({ event: 'revocation.publish_failed', err: (err as Error).message }, 'revocation set not published'),
    });
    await revocations.start();
    republish = () => void revocations.publish().catch(() => undefined);
    runtime.onClose(() => revocations.close());

    // auth enforces its own set too, fed straight from the publisher rather than over the network.
    const heldRevocations = runtime.revocationHolder(verifierKeys);
    let accepting: Promise<unknown> = Promise.resolve();
    revocations.subscribe((jws) => {
      // In publication order: a heartbeat verified ahead of the change before it would be refused.
      accepting = accepting.then(() =>
        heldRevocations.accept(jws).catch((err: Error) => log.error({ event: 'revocation.set_refused', err: err.message }, 'own revocation set refused')),
      );
    });
    await heldRevocations.accept((await revocations.latest()).jws);
    // Partner trust domains' bundles (none without a federation section in the registry).
    await runtime.partnerBundles();
    const mesh = runtime.meshServer(verifierKeys, heldRevocations);
    mesh.server.addService(AuthClient.service, {
      Login: unaryHandler(log, async (req: { username: string; password: string }, call) => {
        const source = loginSource(caller().spiffeId, gatewayId, call.metadata);
        try {
          const res = await metrics.counted('login', () => service.login(caller(), source, req));
          log.info({ event: 'auth.login', user: req.username, source, jti: res.jti }, 'login succeeded');
          return res;
        } catch (err) {
          // A name that cannot be a username may be a password typed in the wrong field: never logged.
          const user = isUsername(req.username) ? req.username : '(not a username)';
          log.warn({ event: 'auth.login_failed', user, source, code: (err as TwokeyError).code }, 'login refused');
          throw err;
        }
      }),
      GetJwks: unaryHandler(log, () => service.getJwks()),
      ExchangeToken: unaryHandler(log, async (req: { subject_token: string; subject_user: string; scope: string; audience: string }) => {
        const who = caller();
        try {
          const res = await metrics.counted('exchange', () => service.exchangeToken(who, req));
          log.info({ event: 'auth.exchange', actor: who.spiffeId, audience: req.audience, scope: res.scope, jti: res.jti }, 'delegated token issued');
          return res;
        } catch (err) {
          log.warn({ event: 'auth.exchange_refused', actor: who.spiffeId, reason: (err as Error).message }, 'token exchange refused');
          throw err;
        }
      }),
      GetServiceToken: unaryHandler(log, async (req: { audience: string }) => {
        const who = caller();
        const res = await metrics.counted('service_token', () => service.getServiceToken(who, req));
        log.info({ event: 'auth.service_token', workload: who.spiffeId, scope: res.scope, jti: res.jti }, 'service token issued');
        return res;
      }),
      ...revocationHandlers(log, revocations, keys, (name) => new UserStore(storage.users).setDisabled(name, true)),
    });
    const port = await mesh.listen(runtime.config.listen);

    // The HTTPS JWKS endpoint presents auth's workload certificate, reloaded when it rotates.
    const material = runtime.svid.material;
    // It also serves our SPIFFE bundle to partners (https_spiffe: they check auth's SPIFFE ID),
    // republished with a higher sequence whenever our CA bundle changes.
    const ownBundle = new PublishedBundle(runtime.registry.trustDomain, certificatesIn(material.bundlePem, SVID_FILES.bundle), {
      refreshHintSeconds: envDurationMs(env, 'TWOKEY_BUNDLE_REFRESH_HINT', '5m') / 1000,
    });
    const https = createJwksHttpsServer({ issuer: policy.issuer, jwks: () => keys.jwks(), tls: { cert: material.chainPem, key: material.keyPem }, bundle: ownBundle });
    runtime.svid.addIdentityCertificateListener(() => {
      const m = runtime.svid.material;
      https.setSecureContext({ cert: m.chainPem, key: m.keyPem });
    });
    runtime.svid.addCaCertificateListener((update) => {
      if (update !== null) ownBundle.update(certificatesIn(update.caCertificate, SVID_FILES.bundle));
    });
    const jwksAddress = envAddress(env, 'TWOKEY_JWKS_HTTPS_LISTEN', besideMeshListener(env, 8444));
    const [host, jwksPort] = splitHostPort(jwksAddress);
    await new Promise<void>((resolve, reject) => {
      https.once('error', reject);
      https.listen(jwksPort, host, () => resolve());
    });
    runtime.onClose(() => new Promise<void>((resolve) => https.close(() => resolve())));
    runtime.serving({ mesh_port: port, jwks_https_port: (https.address() as AddressInfo).port });
    return runtime;
  } catch (err) {
    await runtime.close();
    throw err;
  }
}

function splitHostPort(address: string): [string, number] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(address.slice(i + 1))];
}
