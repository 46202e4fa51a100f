// Prometheus counters of what auth issues: logins, token exchanges and service tokens, by outcome.
import { Counter, type Registry } from 'prom-client';
import { ERROR_CODES, isTwokeyError } from '../authz/errors.ts';

/** The outcome label of a request: issued, an error code (a fixed set), or "error" for anything else. */
export function outcomeOf(err: unknown): string {
  if (err === undefined) return 'issued';
  return isTwokeyError(err) && (ERROR_CODES as readonly string[]).includes(err.code) ? err.code : 'error';
}

export type AuthOperation = 'login' | 'exchange' | 'service_token';

/** Labels are the outcome only: never a user name, a token or its id. */
export class AuthMetrics {
  readonly #counters: Record<AuthOperation, Counter<'outcome'>>;

  constructor(registry: Registry) {
    const counter = (name: string, help: string): Counter<'outcome'> =>
      new Counter({ name, help, labelNames: ['outcome'] as const, registers: [registry] });
    this.#counters = {
      login: counter('twokey_auth_logins_total', 'Login attempts, by outcome (issued, or the error code of the refusal).'),
      exchange: counter('twokey_auth_token_exchanges_total', 'Token exchanges (delegated tokens), by outcome.'),
      service_token: counter('twokey_auth_service_tokens_total', 'Service token requests, by outcome.'),
    };
  }

  /** Counts one request; `err` is what it failed with, undefined when a token was issued. */
  count(operation: AuthOperation, err?: unknown): void {
    this.#counters[operation].inc({ outcome: outcomeOf(err) });
  }

  /** Runs one request and counts how it ended. */
  async counted<T>(operation: AuthOperation, run: () => Promise<T>): Promise<T> {
    try {
      const result = await run();
      this.count(operation);
      return result;
    } catch (err) {
      this.count(operation, err);
      throw err;
    }
  }
}
