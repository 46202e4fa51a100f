// The asynchronous tagger: follows upload events, reads each new image with the service's own
// token, and writes location tags with a token delegated by the image's owner.
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { CursorStore } from './cursor-store.ts';
import { locationTags, readLocation } from './exif-location.ts';

export interface UploadEvent {
  sequence: number;
  type: string;
  imageId: string;
  owner: string;
}

export interface StoredImageView {
  id: string;
  owner: string;
  tags: string[];
  content: Buffer;
}

/** The image store as the worker sees it; tokens are passed per call, never stored there. */
export interface ImageStorePort {
  /** Events after `afterSequence`, as they happen, until the stream ends or fails. */
  watch(afterSequence: number, serviceToken: string, signal: AbortSignal): AsyncIterable<UploadEvent>;
  getImage(id: string, serviceToken: string): Promise<StoredImageView>;
  setTags(id: string, tags: string[], delegatedToken: string): Promise<void>;
}

export interface TokenPort {
  serviceToken(): Promise<string>;
  delegatedToken(owner: string): Promise<string>;
}

/** The cursor store as the worker sees it (services/tagging/cursor-store.ts). */
export type CursorPort = Pick<CursorStore, 'acquire' | 'advance' | 'release'>;

const CURSOR = 'image-events';

/** gRPC codes that mean "this image is gone or not ours to touch": skip it, never retry. */
const SKIP_CODES: ReadonlySet<number> = new Set([status.NOT_FOUND, status.PERMISSION_DENIED, status.INVALID_ARGUMENT]);

function grpcCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

export type TagOutcome = 'tagged' | 'no-location' | 'already-tagged' | 'skipped';

export class TaggingWorker {
  readonly #images: ImageStorePort;
  readonly #tokens: TokenPort;
  readonly #cursor: CursorPort;
  readonly #log: Logger;
  readonly #retryMs: number;
  readonly #holder: string;
  readonly #leaseMs: number;
  readonly #now: () => number;

  constructor(opts: {
    images: ImageStorePort;
    tokens: TokenPort;
    cursor: CursorPort;
    logger: Logger;
    /** This replica's name in the lease; unique per process. */
    holder: string;
    retryMs?: number;
    leaseMs?: number;
    now?: () => number;
  }) {
    this.#images = opts.images;
    this.#tokens = opts.tokens;
    this.#cursor = opts.cursor;
    this.#log = opts.logger;
    this.#holder = opts.holder;
    this.#retryMs = opts.retryMs ?? 1000;
    this.#leaseMs = opts.leaseMs ?? 15_000;
    this.#now = opts.now ?? Date.now;
  }

  /**
   * Runs until aborted. Only the lease holder follows the log, so two replicas never tag the same
   * upload; the other takes over when the holder stops renewing (dies). The cursor advances only
   * after an event is fully handled, so a crash replays at most the event in hand; tagging is
   * idempotent, so a replay changes nothing.
   */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const watching = new AbortController();
      const stop = (): void => watching.abort();
      signal.addEventListener('abort', stop);
      let heartbeat: NodeJS.Timeout | undefined;
      try {
        const start = await this.#cursor.acquire(CURSOR, this.#holder, this.#now(), this.#leaseMs);
        if (start !== undefined) {
          // Renewed well inside its term while the log is quiet; a lost lease ends the watch.
          heartbeat = setInterval(() => {
            this.#cursor.acquire(CURSOR, this.#holder, this.#now(), this.#leaseMs).then(
              (held) => held === undefined && watching.abort(),
              () => watching.abort(),
            );
          }, Math.max(50, Math.floor(this.#leaseMs / 3)));
          const token = await this.#tokens.serviceToken();
          for await (const event of this.#images.watch(start, token, watching.signal)) {
            if (watching.signal.aborted) break;
            if (event.type === 'created') {
              const outcome = await this.handle(event);
              this.#log.info({ event: 'tagging.processed', sequence: event.sequence, image_id: event.imageId, owner: event.owner, outcome }, 'upload processed');
            }
            await this.#cursor.advance(CURSOR, this.#holder, event.sequence, this.#now(), this.#leaseMs);
          }
        }
      } catch (err) {
        if (signal.aborted) break;
        this.#log.warn({ event: 'tagging.retry', err: (err as Error).message, code: grpcCode(err) }, 'watch interrupted; resuming from the cursor');
      } finally {
        clearInterval(heartbeat);
        signal.removeEventListener('abort', stop);
      }
      await sleep(this.#retryMs, signal);
    }
    // A clean stop hands the log to another replica at once instead of after the lease term.
    await this.#cursor.release(CURSOR, this.#holder).catch(() => undefined);
  }

  /** Tags one uploaded image; throws only on errors worth retrying. */
  async handle(event: UploadEvent): Promise<TagOutcome> {
    let image: StoredImageView;
    try {
      image = await this.#images.getImage(event.imageId, await this.#tokens.serviceToken());
    } catch (err) {
      if (SKIP_CODES.has(grpcCode(err) ?? -1)) return this.#skipped(event.imageId, 'read', err);
      throw err;
    }
    const location = await readLocation(image.content);
    if (location === undefined) return 'no-location';
    const wanted = locationTags(location);
    if (wanted.every((t) => image.tags.includes(t))) return 'already-tagged';
    const tags = [...new Set([...image.tags.filter((t) => !t.startsWith('geo:')), ...wanted])];
    try {
      await this.#images.setTags(image.id, tags, await this.#tokens.delegatedToken(image.owner));
    } catch (err) {
      if (SKIP_CODES.has(grpcCode(err) ?? -1)) return this.#skipped(image.id, 'tag', err);
      throw err;
    }
    return 'tagged';
  }

  /** A skip is final, so its reason is logged: a refused exchange or grant must not pass unseen. */
  #skipped(imageId: string, step: 'read' | 'tag', err: unknown): TagOutcome {
    this.#log.warn({ event: 'tagging.skipped', image_id: imageId, step, code: grpcCode(err), err: (err as Error).message }, 'image skipped');
    return 'skipped';
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}
