// Usernames: lowercase, short, and never shaped like a SPIFFE ID, so a user can't pose as a workload.
import { TwokeyError } from '../authz/errors.ts';

const USERNAME = /^[a-z][a-z0-9._-]{0,63}$/;

export function isUsername(input: unknown): input is string {
  return typeof input === 'string' && USERNAME.test(input);
}

export function parseUsername(input: unknown): string {
  if (!isUsername(input)) {
    const shown = typeof input === 'string' ? JSON.stringify(input.slice(0, 80)) : typeof input;
    throw new TwokeyError('ERR_REQUEST_INVALID', `invalid username ${shown}: must match ${USERNAME.source}`);
  }
  return input;
}
