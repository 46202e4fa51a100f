// The `twokey/ca` entry point: the workload CA as a library (create or open a CA, issue and sign
// workload certificates, read the registry). The certificate builder stays internal.
export {
  CertificateAuthority,
  CA_FILES,
  WORKLOAD_FILES,
  DEFAULT_CA_TTL_SECONDS,
  DEFAULT_WORKLOAD_TTL_SECONDS,
  MAX_CERTIFICATE_DER_BYTES,
  type CaEnvironment,
  type CaInitOptions,
  type CaOpenOptions,
  type IssueRequest,
  type IssuedWorkload,
  type IssuedRegistryWorkload,
  type SignedCertificate,
} from './certificate-authority.ts';
export { DEFAULT_MAX_TTL_SECONDS, type CaConfig } from './ca-config.ts';
export { loadRegistry, parseRegistry, findWorkload, DEFAULT_AUTH_ISSUER, type Registry, type RegistryWorkload, type AuthSettings, type Delegation } from './registry.ts';
export { parseDuration, formatDuration } from './duration.ts';
export { generateP256, type KeyPair } from './workload-key.ts';
