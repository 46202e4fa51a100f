// The health service name liveness probes ask for, shared by the health server and the manifest checks.

/**
 * SERVING from the moment the process serves until it stops, whatever its dependencies say.
 * Readiness asks for '' (or a gRPC service name), which a database outage turns NOT_SERVING: the
 * replica leaves its Service, but the kubelet must not restart every replica for an outage no
 * restart can cure.
 */
export const LIVENESS_SERVICE = 'liveness';
