// Prometheus counter of calls shed by a load limit: one label, the limit's name, from a fixed set.
import { Counter, type Registry } from 'prom-client';

/**
 * Counts what load limits refused (RESOURCE_EXHAUSTED) or timed out. The only label is the
 * limit's name, fixed by the code that sheds, never a peer, user or address, so an attacker
 * cannot grow the series.
 */
export class ShedMetrics {
  readonly #counter: Counter<'limit'>;
  readonly #cells = new Map<string, Counter.Internal>();

  constructor(registry: Registry, limits: readonly string[]) {
    this.#counter = new Counter({
      name: 'twokey_calls_shed_total',
      help: 'Calls refused at once by a load limit (RESOURCE_EXHAUSTED), or ended because their request never arrived, by limit.',
      labelNames: ['limit'] as const,
      registers: [registry],
    });
    for (const limit of limits) this.#cells.set(limit, this.#counter.labels(limit));
  }

  shed(limit: string): void {
    (this.#cells.get(limit) ?? this.#counter.labels('other')).inc();
  }
}
