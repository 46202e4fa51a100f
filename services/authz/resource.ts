// Step 5 of the decision, run in handlers: the caller's user owns the resource, or holds the ':any' scope.
import { TwokeyError } from './errors.ts';
import type { VerifiedToken } from './types.ts';

/** Whether the token reaches every owner's resources for this permission (scope `<permission>:any`). */
export function holdsAny(token: VerifiedToken | undefined, permission: string): boolean {
  return token !== undefined && token.scopes.has(`${permission}:any`);
}

/**
 * Allows the resource's owner (token subject, with the permission's scope) or a holder of
 * `<permission>:any`; otherwise throws ERR_RESOURCE_FORBIDDEN (PERMISSION_DENIED). Pass
 * `owner: undefined` for a resource that does not exist: the error is the same, so a caller
 * without access cannot learn whether it exists.
 */
export function authorizeOwner(token: VerifiedToken | undefined, permission: string, owner: string | undefined): void {
  if (holdsAny(token, permission)) return;
  if (token !== undefined && owner !== undefined && owner === token.subject && token.scopes.has(permission)) return;
  throw new TwokeyError(
    'ERR_RESOURCE_FORBIDDEN',
    `resource check failed: "${permission}" on this resource needs its owner or the "${permission}:any" scope`,
  );
}
