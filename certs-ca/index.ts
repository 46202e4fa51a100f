// The workload CA's public surface: the package's `twokey/ca` API (package-api.ts), plus the
// low-level certificate builder and CSR check this repository's tools and tests use.
export * from './package-api.ts';
export { verifiedCsrPublicKey } from './csr.ts';
export * as builder from './certificate-builder.ts';
