// The workload CA's public surface: the CA itself, the registry, and the low-level builder.
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
export { verifiedCsrPublicKey } from './csr.ts';
export { generateP256, type KeyPair } from './workload-key.ts';
export * as builder from './certificate-builder.ts';
