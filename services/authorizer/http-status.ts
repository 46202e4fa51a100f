// The HTTP status a proxy answers a denied call with: what gRPC clients turn back into the library's status.
import { status } from '@grpc/grpc-js';

/**
 * nginx's auth_request acts on 2xx (allow), 401 and 403 (deny with that status); anything else is
 * an error it answers 500, which the generated config maps to UNAVAILABLE. Envoy sends the status
 * of a denied response to the client, and gRPC clients read 401 as UNAUTHENTICATED, 403 as
 * PERMISSION_DENIED, 429 and 503 as UNAVAILABLE.
 */
export function httpStatusOf(code: status): number {
  switch (code) {
    case status.OK:
      return 200;
    case status.UNAUTHENTICATED:
      return 401;
    case status.PERMISSION_DENIED:
      return 403;
    case status.RESOURCE_EXHAUSTED:
      return 429;
    case status.UNAVAILABLE:
      return 503;
    default:
      return 500;
  }
}

// A reason travels as a header value: visible ASCII only, bounded (nginx's buffers are 4-8 KB).
export function headerSafe(text: string): string {
  const shown = text.replace(/[^\x20-\x7e]/g, '?');
  return shown.length > 1024 ? `${shown.slice(0, 1024)}...` : shown;
}
