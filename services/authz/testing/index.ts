// The `twokey/testing` entry point: what a team needs to test its own mesh member for real
// (mutual TLS on loopback, certificates from an in-memory CA, tokens from a throwaway key).
export { TestMesh, startTestServer, type ClientIdentity, type ServeOptions, type TestClient, type TestMeshOptions, type TestServer } from './test-mesh.ts';
export { TestTokens, type TestTokensOptions } from './test-tokens.ts';
