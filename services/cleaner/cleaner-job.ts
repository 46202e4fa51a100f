// The cleaner's periodic job: with its own pseudo-user token, find every image tagged `flagged`
// (any owner) and delete it. It holds no grant to do anything else.
import type { Logger } from 'pino';

export const FLAG_TAG = 'flagged';

export interface CleanerImagesPort {
  /** One page of images carrying `tag`, across all owners. */
  listTagged(tag: string, pageToken: string, serviceToken: string): Promise<{ images: { id: string; owner: string }[]; nextPageToken: string }>;
  deleteImage(id: string, serviceToken: string): Promise<void>;
}

export interface CleanerResult {
  deleted: string[];
  failed: { id: string; error: string }[];
}

export class CleanerJob {
  readonly #images: CleanerImagesPort;
  readonly #serviceToken: () => Promise<string>;
  readonly #log: Logger;

  constructor(opts: { images: CleanerImagesPort; serviceToken: () => Promise<string>; logger: Logger }) {
    this.#images = opts.images;
    this.#serviceToken = opts.serviceToken;
    this.#log = opts.logger;
  }

  /** One sweep. Collects every flagged id first, so deletions never shift the pages being read. */
  async sweep(): Promise<CleanerResult> {
    const token = await this.#serviceToken();
    const targets: { id: string; owner: string }[] = [];
    let pageToken = '';
    do {
      const page = await this.#images.listTagged(FLAG_TAG, pageToken, token);
      targets.push(...page.images);
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    const result: CleanerResult = { deleted: [], failed: [] };
    for (const image of targets) {
      try {
        await this.#images.deleteImage(image.id, token);
        result.deleted.push(image.id);
        this.#log.info({ event: 'cleaner.deleted', image_id: image.id, owner: image.owner }, 'flagged image deleted');
      } catch (err) {
        result.failed.push({ id: image.id, error: (err as Error).message });
        this.#log.warn({ event: 'cleaner.delete_failed', image_id: image.id, err: (err as Error).message }, 'could not delete flagged image');
      }
    }
    this.#log.info({ event: 'cleaner.sweep', deleted: result.deleted.length, failed: result.failed.length }, 'sweep finished');
    return result;
  }
}
