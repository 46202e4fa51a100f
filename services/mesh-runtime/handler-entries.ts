// Counts every entry into a service's own handlers, by method and caller, on /metrics: the evidence,
// from outside the process, that a call the decision refused never reached a handler.
import type { Server, ServiceDefinition, UntypedHandleCall, UntypedServiceImplementation } from '@grpc/grpc-js';
import { Counter, type Registry } from 'prom-client';
import { currentCall } from '../authz/call-context.ts';

export const HANDLER_ENTRIES_METRIC = 'twokey_handler_entries_total';

/** Callers outside `knownCallers` share one label, so a certificate cannot grow the series. */
const OTHER = 'other';
const NONE = 'none';

export class HandlerEntries {
  readonly #counts = new Map<string, { readonly labels: { method: string; caller: string }; count: number }>();
  readonly #knownCallers: ReadonlySet<string>;

  constructor(registry: Registry, knownCallers: readonly string[]) {
    this.#knownCallers = new Set(knownCallers);
    const counts = this.#counts;
    new Counter({
      name: HANDLER_ENTRIES_METRIC,
      help: "Calls that reached one of this service's handlers, by method and caller SPIFFE ID; a call the authorization decision refused never does.",
      labelNames: ['method', 'caller'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const cell of counts.values()) this.inc(cell.labels, cell.count);
      },
    });
  }

  /** Counts one entry into the handler of `method` (a path of a registered service, so a bounded set). */
  enter(method: string): void {
    const peer = currentCall()?.peer?.spiffeId.toString();
    const caller = peer === undefined ? NONE : this.#knownCallers.has(peer) ? peer : OTHER;
    const key = `${method} ${caller}`;
    const cell = this.#counts.get(key);
    if (cell === undefined) this.#counts.set(key, { labels: { method, caller }, count: 1 });
    else cell.count++;
  }

  /** `impl` with each handler counting its entry before any of its own code runs. */
  wrap(service: ServiceDefinition, impl: UntypedServiceImplementation): UntypedServiceImplementation {
    const wrapped: UntypedServiceImplementation = {};
    for (const [name, handler] of Object.entries(impl)) {
      const path = service[name]?.path;
      if (path === undefined || typeof handler !== 'function') {
        wrapped[name] = handler;
        continue;
      }
      const enter = (): void => this.enter(path);
      const fn = handler as (...args: unknown[]) => unknown;
      wrapped[name] = function (this: unknown, ...args: unknown[]): unknown {
        enter();
        return fn.apply(this, args);
      } as UntypedHandleCall;
    }
    return wrapped;
  }

  /** Makes every service later added to `server` count its handler entries. */
  attach(server: Server): void {
    const add = server.addService.bind(server);
    server.addService = (service, impl) => add(service, this.wrap(service, impl));
  }
}
