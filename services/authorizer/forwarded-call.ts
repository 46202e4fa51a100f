// What a proxy forwards about one call it holds: the method, the client's certificate chain, its headers.
import { X509Certificate } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';
import { TwokeyError } from '../authz/errors.ts';
import { certificatesIn } from '../authz/svid-source.ts';

/** The request headers the library reads from a call: the bearer token and the correlation ids. */
const READ_HEADERS = ['authorization', 'x-request-id', 'traceparent', 'tracestate'] as const;

/** A certificate forwarded by a proxy, larger than any SVID twokey's CA issues (with intermediates). */
const MAX_FORWARDED_CERT_CHARS = 64 * 1024;

export interface ForwardedCall {
  /** The gRPC path as the proxy received it, raw (nginx: $request_uri; Envoy: request.http.path). */
  readonly method: string;
  /** The client certificate chain, leaf first; empty when the proxy forwarded none; an error when it was unreadable. */
  readonly certificates: readonly X509Certificate[] | TwokeyError;
  /** The peer's SPIFFE ID as the proxy states it (Envoy's source.principal); read only in Istio mode. */
  readonly principal: string | undefined;
  /**
   * The headers the library reads, as call metadata (every value of each kept, so a repeated
   * bearer is refused); an error when one could not be call metadata at all.
   */
  readonly metadata: Metadata | TwokeyError;
  /** Every request header name the client sent, lower case (the Envoy answer removes identity-claiming ones). */
  readonly headerNames: readonly string[];
}

// A proxy forwards the same few certificates on every call: each is decoded and parsed once (a
// parse is tens of microseconds, the larger part of a check). Only parsing is cached here, never
// trust: the chain is verified against the bundle held at each call (PeerIdentityCache.fromChain).
const PARSED_MAX_ENTRIES = 512;
const PARSED_MAX_CHARS = 16 * 1024;
const parsed = new Map<string, X509Certificate[] | TwokeyError>();

/**
 * The certificate chain in a URL-encoded PEM, as nginx's $ssl_client_escaped_cert and Envoy's
 * source.certificate carry it; an empty value means no certificate was presented.
 */
export function certificatesFromEscapedPem(escaped: string | undefined): readonly X509Certificate[] | TwokeyError {
  if (escaped === undefined || escaped === '' || escaped === '-') return [];
  const known = parsed.get(escaped);
  if (known !== undefined) return known;
  const result = parseEscapedPem(escaped);
  if (escaped.length <= PARSED_MAX_CHARS) {
    if (parsed.size >= PARSED_MAX_ENTRIES) parsed.delete(parsed.keys().next().value as string);
    parsed.set(escaped, result);
  }
  return result;
}

function parseEscapedPem(escaped: string): X509Certificate[] | TwokeyError {
  if (escaped.length > MAX_FORWARDED_CERT_CHARS) return new TwokeyError('ERR_PEER_CERT_INVALID', 'the forwarded client certificate is too large');
  let pem: string;
  try {
    pem = decodeURIComponent(escaped);
  } catch {
    return new TwokeyError('ERR_PEER_CERT_INVALID', 'the forwarded client certificate is not URL-encoded PEM');
  }
  try {
    return certificatesIn(Buffer.from(pem, 'utf8'), 'the forwarded client certificate');
  } catch (err) {
    return new TwokeyError('ERR_PEER_CERT_INVALID', 'the forwarded client certificate is not a readable PEM certificate', { cause: err });
  }
}

/** Call metadata holding the headers the library reads, from a header lookup that returns every value. */
export function metadataFrom(values: (name: string) => readonly string[]): Metadata | TwokeyError {
  const metadata = new Metadata();
  for (const name of READ_HEADERS) {
    for (const value of values(name)) {
      try {
        metadata.add(name, value);
      } catch (err) {
        // Dropping the value instead could leave a second bearer looking like the only one.
        return new TwokeyError('ERR_TOKEN_MALFORMED', `malformed request: the ${name} header holds characters call metadata cannot`, { cause: err });
      }
    }
  }
  return metadata;
}
