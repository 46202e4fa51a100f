// The health listener every mesh process serves; it lives with the library (a member built with joinMesh serves it too).
export * from '../authz/health-server.ts';
