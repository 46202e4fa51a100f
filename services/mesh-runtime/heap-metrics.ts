// What the process's JavaScript heap holds after a full garbage collection: live memory, not allocator slack.
import { PerformanceObserver, constants as perf } from 'node:perf_hooks';
import { getHeapStatistics, queryObjects } from 'node:v8';
import { Counter, Gauge, type Registry } from 'prom-client';

export interface HeapMetricsOptions {
  /**
   * On this signal the process collects garbage in full now (v8.queryObjects does, and counts
   * `retained`'s live instances): an operator's way to read live memory at a moment of their
   * choosing. Only someone allowed to signal the process can; nothing on the network can.
   */
  signal?: NodeJS.Signals;
  /** Objects that should not outlive their work: counted live after that collection. */
  retained?: { readonly constructor: abstract new (...args: never[]) => unknown; readonly inUse: () => number };
}

/**
 * Registers `twokey_heap_used_after_full_gc_bytes{what="heap"|"external"}`, `twokey_full_gcs_total`
 * and (with `retained`) `twokey_objects_retained_after_full_gc`. RSS after a burst of work stays high
 * for as long as V8 and malloc keep the pages they grew (sizing, not retention); what is in use right
 * after a full collection is what the process still references, so a leak shows there. Read when V8
 * reports a full (mark-compact) collection, so nothing runs per call. Returns a stopper.
 */
export function registerHeapMetrics(registry: Registry, options: HeapMetricsOptions = {}): () => void {
  const after = new Gauge({
    name: 'twokey_heap_used_after_full_gc_bytes',
    help: 'Memory in use just after the most recent full garbage collection (0 before the first): the JavaScript heap, and the buffers it holds outside it.',
    labelNames: ['what'] as const,
    registers: [registry],
  });
  const collections = new Counter({
    name: 'twokey_full_gcs_total',
    help: 'Full (mark-compact) garbage collections observed since the process started.',
    registers: [registry],
  });
  const record = (full: number): void => {
    const heap = getHeapStatistics();
    after.set({ what: 'heap' }, heap.used_heap_size);
    after.set({ what: 'external' }, heap.external_memory);
    collections.inc(full);
  };
  const observer = new PerformanceObserver((list) => {
    let full = 0;
    for (const entry of list.getEntries()) {
      if ((entry as { detail?: { kind?: number } }).detail?.kind === perf.NODE_PERFORMANCE_GC_MAJOR) full++;
    }
    // Read once the entries are delivered (soon after the collection): what survived it, plus the
    // little allocated since.
    if (full > 0) record(full);
  });
  observer.observe({ entryTypes: ['gc'] });
  const retained = options.retained;
  const leftOver =
    retained === undefined
      ? undefined
      : new Gauge({
          name: 'twokey_objects_retained_after_full_gc',
          help: 'Objects still referenced after the most recent signalled full collection beyond those in use: a leak when it grows.',
          registers: [registry],
        });
  const onSignal = (): void => {
    // queryObjects collects in full before it counts; the gc entry it causes arrives later.
    const live = queryObjects(retained?.constructor ?? Object, { format: 'count' });
    record(1);
    if (retained !== undefined) leftOver!.set(Math.max(0, live - retained.inUse()));
  };
  if (options.signal !== undefined) process.on(options.signal, onSignal);
  return () => {
    observer.disconnect();
    if (options.signal !== undefined) process.off(options.signal, onSignal);
  };
}
