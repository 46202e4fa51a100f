// Prometheus gauges of a workload's own state: its certificate's remaining life and its token keys' freshness.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { JwksKeySet } from './jwks.ts';
import type { SvidSource } from './rotation.ts';

/** Seconds until this workload's current certificate expires (negative once it has), read on scrape. */
export function registerCertificateMetrics(registry: Registry, svid: SvidSource, clock: () => number = Date.now): void {
  new Gauge({
    name: 'twokey_certificate_expiry_seconds',
    help: "Seconds until this workload's own certificate expires (negative once expired).",
    registers: [registry],
    collect() {
      this.set((svid.svid.notAfter.getTime() - clock()) / 1000);
    },
  });
}

/** Age of the last good JWK Set and the count of failed fetches, read on scrape. */
export function registerJwksMetrics(registry: Registry, keys: JwksKeySet, clock: () => number = Date.now): void {
  new Gauge({
    name: 'twokey_jwks_age_seconds',
    help: 'Seconds since the token verification keys were last fetched successfully (-1 before the first success).',
    registers: [registry],
    collect() {
      const last = keys.lastFetchedMs;
      this.set(last === undefined ? -1 : (clock() - last) / 1000);
    },
  });
  new Counter({
    name: 'twokey_jwks_fetch_failures_total',
    help: 'Failed fetches of the token verification keys (the last good set stays in use).',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(keys.fetchFailures);
    },
  });
}
