// The liveness service name; it lives with the library's health server.
export { LIVENESS_SERVICE } from '../authz/liveness.ts';
