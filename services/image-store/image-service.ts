// The ImageStore handlers' logic: input checks, then the owner check (step 5), then storage.
// Transport-free: each method takes the call's verified token and the decoded request.
import type { VerifiedToken } from '../authz/types.ts';
import { TwokeyError } from '../authz/errors.ts';
import { ExampleError } from '../mesh-runtime/example-errors.ts';
import { authorizeOwner, holdsAny } from '../authz/resource.ts';
import {
  checkContent,
  checkContentType,
  checkImageId,
  checkName,
  checkPageSize,
  checkTags,
  decodePageToken,
  encodePageToken,
} from './image-input.ts';
import type { ImageEventRecord, ImageRepository, StoredImage } from './image-repository.ts';
import { checkRequestId, requestFingerprint, type RequestKey } from './request-keys.ts';

/** The wire shape of twokey.images.v1.Image (int64 as decimal strings, as proto-loader decodes them). */
export interface ImageMessage {
  id: string;
  owner: string;
  name: string;
  content_type: string;
  content: Buffer;
  tags: string[];
  created_at_ms: string;
  updated_at_ms: string;
  size_bytes: string;
}

export function toImageMessage(image: StoredImage): ImageMessage {
  return {
    id: image.id,
    owner: image.owner,
    name: image.name,
    content_type: image.contentType,
    content: image.content ?? Buffer.alloc(0),
    tags: image.tags,
    created_at_ms: String(image.createdAtMs),
    updated_at_ms: String(image.updatedAtMs),
    size_bytes: String(image.sizeBytes),
  };
}

export function toEventMessage(event: ImageEventRecord): Record<string, unknown> {
  return { sequence: String(event.sequence), type: event.type, image_id: event.imageId, owner: event.owner, at_ms: String(event.atMs) };
}

/** The write's AIP-155 key, when the request carries an id: per subject, over the request as validated. */
function requestKey(token: VerifiedToken, rawId: string | undefined, method: string, parts: readonly (string | Buffer)[]): RequestKey | undefined {
  const requestId = checkRequestId(rawId ?? '');
  if (requestId === undefined) return undefined;
  return { subject: token.subject, requestId, method, fingerprint: requestFingerprint(method, parts) };
}

function notFound(id: string): ExampleError {
  return new ExampleError('ERR_RESOURCE_NOT_FOUND', `image ${id} does not exist`);
}

export class ImageService {
  readonly #repo: ImageRepository;

  constructor(repo: ImageRepository) {
    this.#repo = repo;
  }

  /**
   * The image if this token may use `permission` on it. A caller without the ':any' scope gets
   * the same PERMISSION_DENIED for a missing image as for someone else's, so ids leak nothing.
   */
  async #authorized(token: VerifiedToken, permission: string, rawId: string, withContent: boolean): Promise<StoredImage> {
    const id = checkImageId(rawId);
    const image = await this.#repo.get(id, withContent);
    authorizeOwner(token, permission, image?.owner);
    if (image === undefined) throw notFound(id);
    return image;
  }

  /** With a request_id, a repeat returns the image the first call stored (see ImageRepository). */
  async create(token: VerifiedToken, req: { name: string; content_type: string; content: Buffer; tags: string[]; request_id?: string }): Promise<ImageMessage> {
    // Images belong to people: a workload's own pseudo-user never owns one.
    if (token.kind === 'service') {
      throw new TwokeyError('ERR_RESOURCE_FORBIDDEN', 'resource check failed: a service token cannot own images');
    }
    const input = {
      owner: token.subject,
      name: checkName(req.name),
      contentType: checkContentType(req.content_type),
      content: checkContent(req.content),
      tags: checkTags(req.tags),
    };
    const key = requestKey(token, req.request_id, 'CreateImage', [input.name, input.contentType, input.content, ...input.tags]);
    return toImageMessage(await this.#repo.create(input, key));
  }

  async get(token: VerifiedToken, req: { id: string; without_content: boolean }): Promise<ImageMessage> {
    return toImageMessage(await this.#authorized(token, 'images:read', req.id, !req.without_content));
  }

  async list(token: VerifiedToken, req: { owner: string; tag: string; page_size: number; page_token: string }): Promise<{
    images: ImageMessage[];
    next_page_token: string;
  }> {
    let owner: string | undefined;
    if (holdsAny(token, 'images:read')) {
      owner = req.owner === '' ? undefined : req.owner;
    } else {
      // Anyone else lists only their own; asking for another owner's list is refused outright.
      if (req.owner !== '') authorizeOwner(token, 'images:read', req.owner);
      owner = token.subject;
    }
    const tag = req.tag === '' ? undefined : checkTags([req.tag])[0];
    const page = await this.#repo.list({ owner, tag, afterSeq: decodePageToken(req.page_token), limit: checkPageSize(req.page_size) });
    return {
      images: page.images.map(toImageMessage),
      next_page_token: page.more && page.lastSeq !== undefined ? encodePageToken(page.lastSeq) : '',
    };
  }

  async update(token: VerifiedToken, req: { id: string; name: string; content_type: string; content: Buffer }): Promise<ImageMessage> {
    const image = await this.#authorized(token, 'images:write', req.id, false);
    const changes = {
      name: req.name === '' ? undefined : checkName(req.name),
      contentType: req.content_type === '' ? undefined : checkContentType(req.content_type),
      content: req.content.length === 0 ? undefined : checkContent(req.content),
    };
    if (changes.name === undefined && changes.contentType === undefined && changes.content === undefined) {
      throw new TwokeyError('ERR_REQUEST_INVALID', 'UpdateImage needs at least one of name, content_type, content');
    }
    const updated = await this.#repo.update(image.id, changes);
    if (updated === undefined) throw notFound(image.id);
    return toImageMessage(updated);
  }

  async setTags(token: VerifiedToken, req: { id: string; tags: string[]; request_id?: string }): Promise<ImageMessage> {
    const image = await this.#authorized(token, 'images:tag', req.id, false);
    const tags = checkTags(req.tags);
    const key = requestKey(token, req.request_id, 'SetTags', [image.id, ...tags]);
    const updated = await this.#repo.setTags(image.id, tags, key);
    if (updated === undefined) throw notFound(image.id);
    return toImageMessage(updated);
  }

  async delete(token: VerifiedToken, req: { id: string }): Promise<Record<string, never>> {
    const image = await this.#authorized(token, 'images:delete', req.id, false);
    if (!(await this.#repo.delete(image.id))) throw notFound(image.id);
    return {};
  }
}
