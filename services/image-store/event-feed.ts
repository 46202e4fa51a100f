// Streams the durable event log from a cursor: backlog first, then live events as they commit.
import type { ImageEventRecord, ImageRepository } from './image-repository.ts';

const BATCH = 100;
// Wake-ups come from commits here and (PostgreSQL) NOTIFY from other replicas; the poll covers a
// wake-up lost while the listening connection was down, and other processes writing the SQLite file.
const POLL_MS = 1000;

/**
 * Calls `write` for every event after `afterSequence`, in order, until `signal` aborts.
 * `write` returns false when the consumer is saturated; the feed then waits for `drained`.
 */
export async function followEvents(
  repo: ImageRepository,
  afterSequence: number,
  write: (event: ImageEventRecord) => boolean,
  drained: () => Promise<void>,
  signal: AbortSignal,
): Promise<void> {
  let cursor = afterSequence;
  let wake: (() => void) | undefined;
  const unsubscribe = repo.onEvent(() => wake?.());
  const onAbort = (): void => wake?.();
  signal.addEventListener('abort', onAbort);
  try {
    while (!signal.aborted) {
      const batch = await repo.eventsAfter(cursor, BATCH);
      for (const event of batch) {
        if (signal.aborted) return;
        cursor = event.sequence;
        if (!write(event)) await drained();
      }
      if (batch.length === BATCH) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, POLL_MS);
        function done(): void {
          clearTimeout(timer);
          wake = undefined;
          resolve();
        }
        wake = done;
      });
    }
  } finally {
    unsubscribe();
    signal.removeEventListener('abort', onAbort);
  }
}
