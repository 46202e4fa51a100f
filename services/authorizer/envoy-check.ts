// Envoy's ext_authz v3 Check: the call Envoy holds, read from a CheckRequest; the decision, written as a CheckResponse.
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { isIdentityClaiming } from '../authz/identity-metadata.ts';
import { PROTO_LOADER_OPTIONS } from '../authz/method-catalog.ts';
import { IDENTITY_HEADER_NAMES, REASON_HEADER, type IdentityHeader } from './backend-headers.ts';
import { certificatesFromEscapedPem, metadataFrom, type ForwardedCall } from './forwarded-call.ts';
import type { ForwardedDecision, ForwardedDecisions } from './forwarded-decision.ts';
import { headerSafe, httpStatusOf } from './http-status.ts';
import { AUTHORIZER_PROTO_ROOT } from './proxy-admission.ts';

/** The fields of a CheckRequest the authorizer reads (as @grpc/proto-loader decodes it, keepCase). */
export interface CheckRequest {
  attributes?: {
    source?: { principal?: string; certificate?: string } | null;
    request?: {
      http?: {
        path?: string;
        headers?: Record<string, string>;
        /** Envoy's encode_raw_headers: every header field, repeated names kept apart. */
        header_map?: { headers?: { key?: string; value?: string; raw_value?: Buffer }[] } | null;
      } | null;
    } | null;
  } | null;
}

interface HeaderValueOption {
  header: { key: string; value: string };
  append_action: 'OVERWRITE_IF_EXISTS_OR_ADD';
}

export interface CheckResponse {
  status: { code: number; message: string };
  ok_response?: { headers: HeaderValueOption[]; headers_to_remove: string[] };
  denied_response?: { status: { code: number }; headers: HeaderValueOption[]; body: string };
}

/** Envoy's Authorization service definition, from Envoy's own protos (copied under AUTHORIZER_PROTO_ROOT). */
export function authorizationService(): grpc.ServiceDefinition {
  const definition = loadSync('envoy/service/auth/v3/external_auth.proto', { ...PROTO_LOADER_OPTIONS, includeDirs: [AUTHORIZER_PROTO_ROOT] });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as { envoy: { service: { auth: { v3: { Authorization: grpc.ServiceClientConstructor } } } } };
  return pkg.envoy.service.auth.v3.Authorization.service;
}

/** The call Envoy holds, as its ext_authz filter describes it. */
export function forwardedFromCheck(request: CheckRequest): ForwardedCall {
  const source = request.attributes?.source ?? undefined;
  const http = request.attributes?.request?.http ?? undefined;
  const values = new Map<string, string[]>();
  const rawHeaders = http?.header_map?.headers;
  if (rawHeaders !== undefined && rawHeaders.length > 0) {
    for (const h of rawHeaders) {
      const key = (h.key ?? '').toLowerCase();
      const value = h.raw_value !== undefined && h.raw_value.length > 0 ? h.raw_value.toString('latin1') : (h.value ?? '');
      values.set(key, [...(values.get(key) ?? []), value]);
    }
  } else {
    // Envoy joins repeated fields with "," here; a joined bearer is then malformed, never half-read.
    for (const [key, value] of Object.entries(http?.headers ?? {})) values.set(key.toLowerCase(), [value]);
  }
  return {
    method: http?.path ?? '',
    certificates: certificatesFromEscapedPem(source?.certificate),
    principal: source?.principal || undefined,
    metadata: metadataFrom((name) => values.get(name) ?? []),
    headerNames: [...values.keys()].filter((k) => !k.startsWith(':')),
  };
}

const overwrite = (key: string, value: string): HeaderValueOption => ({ header: { key, value }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' });

/**
 * The answer for Envoy. Allowed: every identity header with a value overwrites the client's copies;
 * those without one, and any other header claiming an identity that the client sent, are removed
 * (a name is never both set and removed). Denied: the status inside, the HTTP status Envoy answers
 * with (401/403, 503 when the authorizer cannot decide now), and the reason as body and header.
 */
export function checkResponse(call: ForwardedCall, result: ForwardedDecision): CheckResponse {
  const { decision } = result;
  if (decision.allow && result.headers !== undefined) {
    const set: HeaderValueOption[] = [];
    const remove = new Set<string>();
    for (const name of IDENTITY_HEADER_NAMES) {
      const value = result.headers[name as IdentityHeader];
      if (value === '') remove.add(name);
      else set.push(overwrite(name, value));
    }
    for (const name of call.headerNames) if (isIdentityClaiming(name) && !IDENTITY_HEADER_NAMES.includes(name as IdentityHeader)) remove.add(name);
    return { status: { code: grpc.status.OK, message: '' }, ok_response: { headers: set, headers_to_remove: [...remove] } };
  }
  const code = decision.allow ? grpc.status.INTERNAL : decision.code;
  const message = headerSafe(result.message || 'twokey: authorization failed internally');
  return {
    status: { code, message },
    denied_response: { status: { code: httpStatusOf(code) }, headers: [overwrite(REASON_HEADER, message)], body: message },
  };
}

/** The Check handler: every error answers a denial (never OK), and an unexpected throw fails the RPC (Envoy: status_on_error). */
export function checkHandler(decisions: ForwardedDecisions): grpc.handleUnaryCall<CheckRequest, CheckResponse> {
  return (call, callback) => {
    let forwarded: ForwardedCall;
    try {
      forwarded = forwardedFromCheck(call.request);
    } catch (err) {
      return callback({ code: grpc.status.INTERNAL, details: `twokey: unreadable CheckRequest: ${(err as Error).message}` });
    }
    decisions.decide(forwarded).then(
      (result) => callback(null, checkResponse(forwarded, result)),
      () => callback({ code: grpc.status.INTERNAL, details: 'twokey: authorization failed internally' }),
    );
  };
}
