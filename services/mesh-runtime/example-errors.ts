// Error codes only the example services use: stable like the library's, but not in its public ERROR_CODES.
import { status } from '@grpc/grpc-js';

// Only callers allowed to see every owner's resources get NOT_FOUND; others get the library's
// ERR_RESOURCE_FORBIDDEN for a missing resource too, so existence never leaks.
const STATUS_BY_EXAMPLE_CODE = {
  ERR_RESOURCE_TOO_LARGE: status.RESOURCE_EXHAUSTED,
  ERR_RESOURCE_NOT_FOUND: status.NOT_FOUND,
  // An AIP-155 request id sent again with a different request.
  ERR_REQUEST_ID_REUSED: status.ALREADY_EXISTS,
} as const;

export type ExampleErrorCode = keyof typeof STATUS_BY_EXAMPLE_CODE;

/** A refusal by an example service's handler; handlers.ts turns it into its status. */
export class ExampleError extends Error {
  override readonly name = 'ExampleError';
  readonly code: ExampleErrorCode;

  constructor(code: ExampleErrorCode, message: string) {
    super(message);
    this.code = code;
  }

  get grpcStatus(): status {
    return STATUS_BY_EXAMPLE_CODE[this.code];
  }
}

export function isExampleError(err: unknown): err is ExampleError {
  return err instanceof ExampleError;
}
