// Prometheus gauges of a workload's own state: its certificate's remaining life, its token keys' and revocation set's freshness.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { JwksKeySet } from './jwks.ts';
import { entryCount, type RevocationHolder } from './revocation-set.ts';
import type { SvidSource } from './svid-source.ts';

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

/**
 * Age and sequence number of the revocation set held, read on scrape. Alert on the age well before
 * it reaches the staleness bound: past it every call is refused UNAVAILABLE.
 */
export function registerRevocationMetrics(registry: Registry, holder: RevocationHolder, clock: () => number = Date.now): void {
  new Gauge({
    name: 'twokey_revocation_set_age_seconds',
    help: 'Seconds since auth signed the revocation set this process holds (-1 before the first set).',
    registers: [registry],
    collect() {
      const set = holder.current;
      this.set(set === null ? -1 : (clock() - set.issuedAtMs) / 1000);
    },
  });
  new Gauge({
    name: 'twokey_revocation_set_seq',
    help: 'Sequence number of the revocation set held (-1 before the first set); it grows with every revocation.',
    registers: [registry],
    collect() {
      this.set(holder.current?.seq ?? -1);
    },
  });
  new Gauge({
    name: 'twokey_revocation_set_entries',
    help: 'Entries in the revocation set held: disabled users, token ids, certificate serials and withdrawn keys.',
    registers: [registry],
    collect() {
      const set = holder.current;
      this.set(set === null ? 0 : entryCount(set));
    },
  });
}
