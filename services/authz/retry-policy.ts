// How a mesh client spreads calls over a service's replicas and which calls it repeats on another
// one: grpc-js service config (round_robin, retryPolicy, retryThrottling) derived from the protos.
import type { CallInvocationTransformer, ChannelInterface } from '@grpc/grpc-js';
import { TwokeyError } from './errors.ts';
import type { MethodCatalog } from './method-catalog.ts';

/**
 * gRPC's retry throttling (gRFC A6), a budget per target shared by every channel of the process:
 * it starts full at `maxTokens`; each failed attempt takes one token, each success gives back
 * `tokenRatio`; retries stop while the budget is at or below half, so a service that is down for
 * everyone gets the first few retries and then none.
 */
export interface RetryBudget {
  maxTokens: number;
  tokenRatio: number;
}

export const DEFAULT_RETRY_BUDGET: RetryBudget = { maxTokens: 20, tokenRatio: 0.2 };

/** One retry, shortly after, and only for UNAVAILABLE: the replica went away, or refused before doing anything. */
const RETRY_POLICY = {
  maxAttempts: 2,
  initialBackoff: '0.02s',
  maxBackoff: '0.2s',
  backoffMultiplier: 2,
  retryableStatusCodes: ['UNAVAILABLE'],
} as const;

export function checkRetryBudget(budget: RetryBudget): RetryBudget {
  const { maxTokens, tokenRatio } = budget;
  if (!Number.isFinite(maxTokens) || maxTokens <= 0 || maxTokens > 1000) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `retry budget maxTokens must be in (0, 1000], not ${maxTokens}`);
  }
  if (!Number.isFinite(tokenRatio) || tokenRatio <= 0) throw new TwokeyError('ERR_CONFIG_INVALID', `retry budget tokenRatio must be above 0, not ${tokenRatio}`);
  return budget;
}

/**
 * The service config every mesh channel gets: round_robin over every address the target resolves
 * to (a Kubernetes headless Service's name resolves to each ready pod), and one retry for the
 * methods whose proto says repeating them is safe: `idempotency_level` NO_SIDE_EFFECTS or
 * IDEMPOTENT, or an AIP-155 `request_id` field (such calls without an id go over a channel that
 * does not retry them, see keyedCallRouting). grpc-js commits an attempt as soon as response headers
 * or a message arrive, so nothing is repeated once the server has begun to answer.
 */
export function meshServiceConfig(catalog: MethodCatalog, budget: RetryBudget = DEFAULT_RETRY_BUDGET, keyedWrites = true): string {
  const retried = catalog
    .methods()
    .filter((m) => m.idempotency !== 'IDEMPOTENCY_UNKNOWN' || (keyedWrites && m.requestIdField !== undefined))
    .map((m) => ({ service: m.service, method: m.name }));
  return JSON.stringify({
    loadBalancingConfig: [{ round_robin: {} }],
    ...(retried.length === 0 ? {} : { methodConfig: [{ name: retried, retryPolicy: RETRY_POLICY }] }),
    retryThrottling: checkRetryBudget(budget),
  });
}

/** Whether `message` sets a non-empty string in field `field`: a decoded object, or the raw bytes a proxy relays. */
export function carriesRequestId(message: unknown, field: number): boolean {
  if (Buffer.isBuffer(message)) return rawFieldLength(message, field) > 0;
  const value = (message as { request_id?: unknown } | null | undefined)?.request_id;
  return typeof value === 'string' && value !== '';
}

/**
 * The length of the last occurrence of length-delimited field `field` in a serialized message
 * (protobuf keeps the last of a repeated singular field), 0 when absent; -1 when the bytes do not
 * parse, which the caller treats as "no id": such a call is simply not repeated.
 */
export function rawFieldLength(bytes: Buffer, field: number): number {
  let at = 0;
  let found = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      if (at >= bytes.length) return -1;
      const b = bytes[at++]!;
      value += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return value;
    }
    return -1;
  };
  while (at < bytes.length) {
    const key = varint();
    if (key < 0) return -1;
    const wireType = key % 8;
    const number = Math.floor(key / 8);
    switch (wireType) {
      case 0:
        if (varint() < 0) return -1;
        break;
      case 1:
        at += 8;
        break;
      case 2: {
        const length = varint();
        if (length < 0 || at + length > bytes.length) return -1;
        if (number === field) found = length;
        at += length;
        break;
      }
      case 5:
        at += 4;
        break;
      default:
        return -1;
    }
    if (at > bytes.length) return -1;
  }
  return found;
}

/**
 * Sends a call to a method with an AIP-155 request id but without an id set over a second channel
 * whose service config does not retry such methods (`unretried`, called on first use with that
 * service config): a service config can only say "retry this method", and a write without an id
 * might be stored twice if repeated. grpc-js's transparent retry (an attempt that never reached
 * the server application) stays on for it. Everything else keeps the client's own channel.
 */
export function keyedCallRouting(
  catalog: MethodCatalog,
  budget: RetryBudget,
  unretried: (serviceConfig: string) => ChannelInterface,
): CallInvocationTransformer {
  const keyed = new Map(catalog.methods().flatMap((m) => (m.requestIdField === undefined || m.idempotency !== 'IDEMPOTENCY_UNKNOWN' ? [] : [[m.path, m.requestIdField] as const])));
  let channel: ChannelInterface | undefined;
  return (props) => {
    const field = keyed.get(props.methodDefinition.path);
    if (field === undefined || carriesRequestId(props.argument, field)) return props;
    channel ??= unretried(meshServiceConfig(catalog, budget, false));
    return { ...props, channel };
  };
}
