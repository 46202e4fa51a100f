// Issues every registry workload's certificate and writes them as Kubernetes Secrets, one per
// workload, for `kubectl apply`. The CA key stays where the CA is; only workload keys leave.
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { CertificateAuthority, type Registry } from '../certs-ca/index.ts';
import { TwokeyError } from '../services/authz/errors.ts';
import { toYamlStream, type K8sObject } from '../deploy/tools/manifest.ts';
import { GATEWAY_PUBLIC_TLS_SECRET, svidSecret, tlsSecret } from '../deploy/tools/workload-secrets.ts';
import { ensurePublicTls } from './local-mesh/public-tls.ts';

export interface WorkloadSecretsOptions {
  /** Refuse a registry that puts any workload outside this namespace. */
  namespace?: string;
  /**
   * Also emit the gateway's public TLS Secret from DIR/tls.crt and DIR/tls.key, made for
   * localhost by DIR's own small CA (DIR/ca.pem, what clients trust) when DIR has none.
   */
  gatewayTlsDir?: string;
  /** Proto roots beyond proto/ defining methods the registry grants (the authorizer's Envoy protos, another team's). */
  extraProtoRoots?: readonly string[];
}

/**
 * One SVID Secret per deployed registry workload, all issued before any is returned, so a registry
 * with one bad entry yields nothing. An identity people hold (`deployed: false`) gets none: its
 * certificate is issued to them with `twokey ca issue`, never stored in the cluster.
 */
export function workloadSecrets(ca: CertificateAuthority, registry: Registry, opts: WorkloadSecretsOptions = {}): K8sObject[] {
  if (registry.trustDomain !== ca.trustDomain) {
    throw new TwokeyError('ERR_CA_POLICY', `registry trust domain ${registry.trustDomain} is not this CA's trust domain ${ca.trustDomain}`);
  }
  const secrets = registry.workloads.filter((w) => w.deployed).map((w) => {
    if (opts.namespace !== undefined && w.namespace !== opts.namespace) {
      throw new TwokeyError('ERR_REGISTRY_INVALID', `workload ${w.name} is in namespace ${w.namespace}, not ${opts.namespace}`);
    }
    try {
      return svidSecret(w, ca.issue({ spiffeId: w.spiffeId, grants: w.grants, ttl: w.ttl, dns: w.dns, ip: w.ip, extraProtoRoots: opts.extraProtoRoots }));
    } catch (err) {
      if (err instanceof TwokeyError) throw new TwokeyError(err.code, `workload ${w.name}: ${err.message}`, { cause: err });
      throw err;
    }
  });
  if (opts.gatewayTlsDir !== undefined) {
    const gateway = registry.workloads.find((w) => w.name === 'gateway');
    if (gateway === undefined) throw new TwokeyError('ERR_REGISTRY_INVALID', 'a gateway TLS directory was given, but the registry has no gateway workload');
    const files = ensurePublicTls(opts.gatewayTlsDir);
    secrets.push(tlsSecret(GATEWAY_PUBLIC_TLS_SECRET, gateway.namespace, gateway.name, readFileSync(files.certFile, 'utf8'), readFileSync(files.keyFile, 'utf8')));
  }
  return secrets;
}

/** Writes the Secrets as one YAML stream: to stdout for '-', else to a file only its owner reads. */
export function writeSecrets(secrets: readonly K8sObject[], out: string): void {
  const yaml = toYamlStream(secrets);
  if (out === '-') {
    process.stdout.write(yaml);
    return;
  }
  // Private keys inside: created 0600 under a temporary name, then renamed over the old file.
  const tmp = `${out}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, yaml, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, out);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new TwokeyError('ERR_CONFIG_INVALID', `cannot write ${out}: ${(err as Error).message}`, { cause: err });
  }
}
