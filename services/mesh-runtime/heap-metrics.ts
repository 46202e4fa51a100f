// What the process's JavaScript heap holds after each full garbage collection: live memory, not allocator slack.
import { PerformanceObserver, constants as perf } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * Registers `twokey_heap_used_after_full_gc_bytes{what="heap"|"external"}` and `twokey_full_gcs_total`. RSS after a burst
 * of work stays high for as long as V8 and malloc keep the pages they grew (that is sizing, not
 * retention); the heap used right after a full collection is what the process still references,
 * so a leak shows there and nothing else does. Read when V8 reports a full (mark-compact)
 * collection, so nothing runs per call and nothing forces a collection. Returns a stopper.
 */
export function registerHeapMetrics(registry: Registry): () => void {
  const after = new Gauge({
    name: 'twokey_heap_used_after_full_gc_bytes',
    help: 'Memory in use just after the most recent full garbage collection (0 before the first): the JavaScript heap, and the buffers it holds outside it.',
    labelNames: ['what'] as const,
    registers: [registry],
  });
  const collections = new Counter({
    name: 'twokey_full_gcs_total',
    help: 'Full (mark-compact) garbage collections since the process started.',
    registers: [registry],
  });
  const observer = new PerformanceObserver((list) => {
    let full = 0;
    for (const entry of list.getEntries()) {
      if ((entry as { detail?: { kind?: number } }).detail?.kind === perf.NODE_PERFORMANCE_GC_MAJOR) full++;
    }
    if (full === 0) return;
    // Read once the entries are delivered (soon after the collection): what survived it, plus the
    // little allocated since.
    const heap = getHeapStatistics();
    after.set({ what: 'heap' }, heap.used_heap_size);
    after.set({ what: 'external' }, heap.external_memory);
    collections.inc(full);
  });
  observer.observe({ entryTypes: ['gc'] });
  return () => observer.disconnect();
}
