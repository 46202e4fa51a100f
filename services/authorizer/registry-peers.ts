// Istio mode: a peer known only by the SPIFFE ID its proxy vouches for, with the grants its registry entry lists.
import type { RegistryWorkload } from '../../certs-ca/registry.ts';
import type { PeerIdentity, PeerResult } from '../authz/types.ts';
import { TwokeyError, isTwokeyError } from '../authz/errors.ts';
import { SpiffeId } from '../authz/spiffe-id.ts';

// Such a peer's validity is the proxy's business (Istio verified its certificate); decide() still
// compares these dates with the clock, so they span all time.
const ALWAYS_FROM = new Date(-8.64e15);
const ALWAYS_UNTIL = new Date(8.64e15);

/**
 * The peers of Istio mode. Istio's CUSTOM authorization provider forwards the principal its mTLS
 * verified, never the certificate, so the grants come from the same registry entry the CA signs a
 * certificate from. What is lost against a certificate: the thumbprint (delegated and service
 * tokens bind by SPIFFE ID only), the serial (certificate revocation cannot apply), and the check
 * of the chain against twokey's own bundle.
 */
export class RegistryPeers {
  readonly #byId = new Map<string, PeerIdentity>();

  constructor(workloads: readonly RegistryWorkload[]) {
    for (const w of workloads) {
      // One object per workload: the decision log and metrics cache what they derive per peer object.
      this.#byId.set(w.spiffeId.toString(), {
        spiffeId: w.spiffeId,
        serialHex: '',
        grants: w.grants,
        notBefore: ALWAYS_FROM,
        notAfter: ALWAYS_UNTIL,
        thumbprint: '',
        grantsFrom: 'registry',
      });
    }
  }

  /** The peer for a principal the proxy forwarded; refused unless it is a registry workload's SPIFFE ID. */
  fromPrincipal(principal: string | undefined): PeerResult {
    if (principal === undefined || principal === '') {
      return { ok: false, error: new TwokeyError('ERR_PEER_CERT_MISSING', 'the proxy forwarded neither a client certificate nor a principal') };
    }
    let id: SpiffeId;
    try {
      id = SpiffeId.parse(principal);
    } catch (err) {
      return { ok: false, error: isTwokeyError(err) ? err : new TwokeyError('ERR_SPIFFE_ID_INVALID', 'the forwarded principal is not a SPIFFE ID') };
    }
    const identity = this.#byId.get(id.toString());
    if (identity === undefined) {
      return { ok: false, error: new TwokeyError('ERR_PEER_CERT_INVALID', `principal ${id} is not a workload of the registry, which Istio mode takes grants from`) };
    }
    return { ok: true, identity };
  }
}
