// The Kubernetes Secrets that carry certificates into pods: names, mount paths and contents.
import { WORKLOAD_FILES, type IssuedWorkload, type RegistryWorkload } from '../../certs-ca/index.ts';
import type { K8sObject } from './manifest.ts';

/** Where every service reads svid.pem, svid.key and bundle.pem (TWOKEY_SVID_DIR). */
export const SVID_MOUNT_PATH = '/var/run/twokey/svid';
/** The gateway's public TLS certificate for users (tls.crt, tls.key; TWOKEY_PUBLIC_TLS_DIR). */
export const GATEWAY_PUBLIC_TLS_SECRET = 'gateway-public-tls';

/**
 * The Secret the operator creates for the replicated shape (deploy/overlays/postgres): `url`, the
 * PostgreSQL URL with its password, for TWOKEY_DATABASE_URL; `password`, the same password, for
 * the trial PostgreSQL. Not made by `twokey k8s secrets`: docs/kubernetes.md shows the
 * command.
 */
export const DATABASE_SECRET = 'twokey-database';

export function svidSecretName(workloadName: string): string {
  return `${workloadName}-svid`;
}

const base64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');

function labels(workloadName: string): Record<string, string> {
  return { 'app.kubernetes.io/name': workloadName, 'app.kubernetes.io/part-of': 'twokey' };
}

/**
 * One workload's certificate files as a Secret in its namespace. The annotations let an operator
 * see with kubectl which identity a Secret holds and when it must be rotated.
 */
export function svidSecret(workload: RegistryWorkload, issued: IssuedWorkload): K8sObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: svidSecretName(workload.name),
      namespace: workload.namespace,
      labels: labels(workload.name),
      annotations: {
        'twokey.local/spiffe-id': issued.svid.spiffeId.toString(),
        'twokey.local/serial': issued.svid.serialHex,
        'twokey.local/not-after': issued.svid.notAfter.toISOString(),
      },
    },
    type: 'Opaque',
    data: {
      [WORKLOAD_FILES.chain]: base64(issued.chainPem),
      [WORKLOAD_FILES.key]: base64(issued.keyPem),
      [WORKLOAD_FILES.bundle]: base64(issued.bundlePem),
    },
  };
}

/** A `kubernetes.io/tls` Secret, the shape `kubectl create secret tls` makes. */
export function tlsSecret(name: string, namespace: string, workloadName: string, certPem: string, keyPem: string): K8sObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace, labels: labels(workloadName) },
    type: 'kubernetes.io/tls',
    data: { 'tls.crt': base64(certPem), 'tls.key': base64(keyPem) },
  };
}
