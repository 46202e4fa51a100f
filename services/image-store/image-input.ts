// Validation of what clients send the image store: names, content types, tags, sizes, paging.
import { TwokeyError } from '../authz/errors.ts';
import { ExampleError } from '../mesh-runtime/example-errors.ts';

export const LIMITS = {
  maxContentBytes: 4 * 1024 * 1024,
  maxNameChars: 256,
  maxTags: 32,
  maxPageSize: 200,
  defaultPageSize: 50,
} as const;

const CONTENT_TYPE = /^image\/[a-z0-9][a-z0-9.+-]{0,62}$/;
const TAG = /^[a-z0-9][a-z0-9:._,+-]{0,63}$/;
const IMAGE_ID = /^img_[0-9a-f]{32}$/;
const CONTROL = /[\u0000-\u001f\u007f]/;

function bad(message: string): TwokeyError {
  return new TwokeyError('ERR_REQUEST_INVALID', message);
}

export function checkName(name: string): string {
  if (name === '') throw bad('image name is required');
  if (name.length > LIMITS.maxNameChars) throw bad(`image name is longer than ${LIMITS.maxNameChars} characters`);
  if (CONTROL.test(name)) throw bad('image name contains control characters');
  return name;
}

export function checkContentType(type: string): string {
  if (!CONTENT_TYPE.test(type)) throw bad(`content type ${JSON.stringify(type.slice(0, 80))} is not an image/* media type`);
  return type;
}

export function checkContent(content: Buffer): Buffer {
  if (content.length === 0) throw bad('image content is empty');
  if (content.length > LIMITS.maxContentBytes) {
    throw new ExampleError('ERR_RESOURCE_TOO_LARGE', `image content is ${content.length} bytes; the limit is ${LIMITS.maxContentBytes} bytes`);
  }
  return content;
}

/** Tags as a sorted set; duplicates collapse. */
export function checkTags(tags: readonly string[]): string[] {
  if (tags.length > LIMITS.maxTags) throw bad(`more than ${LIMITS.maxTags} tags`);
  for (const tag of tags) {
    if (!TAG.test(tag)) throw bad(`tag ${JSON.stringify(tag.slice(0, 80))} must match ${TAG.source}`);
  }
  return [...new Set(tags)].sort();
}

export function checkImageId(id: string): string {
  if (!IMAGE_ID.test(id)) throw bad(`image id ${JSON.stringify(id.slice(0, 80))} is not an image id (img_ + 32 hex digits)`);
  return id;
}

export function checkPageSize(size: number): number {
  if (size === 0) return LIMITS.defaultPageSize;
  if (!Number.isInteger(size) || size < 0 || size > LIMITS.maxPageSize) throw bad(`page_size must be 0..${LIMITS.maxPageSize}`);
  return size;
}

/** Page tokens are opaque to clients: base64url of the last row's sequence number. */
export function encodePageToken(seq: number): string {
  return Buffer.from(`p${seq}`).toString('base64url');
}

export function decodePageToken(token: string): number {
  if (token === '') return 0;
  const text = Buffer.from(token, 'base64url').toString();
  const match = /^p(\d{1,15})$/.exec(text);
  if (match === null || encodePageToken(Number(match[1])) !== token) throw bad('page_token is not one this service issued');
  return Number(match[1]);
}
