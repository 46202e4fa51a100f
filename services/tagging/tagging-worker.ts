// The asynchronous tagger: follows upload events, reads each new image with the service's own
// token, and writes location tags with a token delegated by the image's owner.
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
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

export interface CursorPort {
  get(name: string): number;
  set(name: string, sequence: number): void;
}

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

  constructor(opts: { images: ImageStorePort; tokens: TokenPort; cursor: CursorPort; logger: Logger; retryMs?: number }) {
    this.#images = opts.images;
    this.#tokens = opts.tokens;
    this.#cursor = opts.cursor;
    this.#log = opts.logger;
    this.#retryMs = opts.retryMs ?? 1000;
  }

  /**
   * Runs until aborted. The cursor advances only after an event is fully handled, so a crash
   * replays at most the event in hand; tagging is idempotent, so a replay changes nothing.
   */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        const token = await this.#tokens.serviceToken();
        for await (const event of this.#images.watch(this.#cursor.get(CURSOR), token, signal)) {
          if (event.type === 'created') {
            const outcome = await this.handle(event);
            this.#log.info({ event: 'tagging.processed', sequence: event.sequence, image_id: event.imageId, owner: event.owner, outcome }, 'upload processed');
          }
          this.#cursor.set(CURSOR, event.sequence);
        }
      } catch (err) {
        if (signal.aborted) break;
        this.#log.warn({ event: 'tagging.retry', err: (err as Error).message, code: grpcCode(err) }, 'watch interrupted; resuming from the cursor');
      }
      await sleep(this.#retryMs, signal);
    }
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
