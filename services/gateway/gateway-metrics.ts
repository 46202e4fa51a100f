// Prometheus counter of the gateway's public requests: forwarded, or refused at the door with the error code.
import { Counter, type Registry } from 'prom-client';
import { ERROR_CODES } from '../authz/errors.ts';

/** Counted where the gateway.forward and gateway.deny lines are written, and for cancelled calls; labels are the route and a fixed set of outcomes. */
export class GatewayMetrics {
  readonly #counter: Counter<'method' | 'outcome'>;

  constructor(registry: Registry) {
    this.#counter = new Counter({
      name: 'twokey_gateway_requests_total',
      help: 'Public requests, by route and outcome: forwarded into the mesh, or the error code the gateway refused them with.',
      labelNames: ['method', 'outcome'] as const,
      registers: [registry],
    });
  }

  forwarded(route: string): void {
    this.#counter.inc({ method: route, outcome: 'forwarded' });
  }

  /**
   * A call the client cancelled: before anything was forwarded, with its upstream call then
   * cancelled, or with its upstream call left to finish (past the upstream's cancel budget).
   */
  cancelled(route: string, how: 'before_forward' | 'upstream' | 'left_to_finish'): void {
    this.#counter.inc({ method: route, outcome: `cancelled_${how}` });
  }

  denied(route: string, errorCode: string): void {
    this.#counter.inc({ method: route, outcome: (ERROR_CODES as readonly string[]).includes(errorCode) ? errorCode : 'error' });
  }
}
