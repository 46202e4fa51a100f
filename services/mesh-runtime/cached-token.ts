// A token obtained from auth, reused until most of its lifetime has passed, then fetched again.

export interface IssuedToken {
  access_token: string;
  expires_in: string | number;
}

/** Refreshes at 80% of the lifetime, so a token is never presented in its last moments. */
export class CachedToken {
  readonly #fetch: () => Promise<IssuedToken>;
  readonly #now: () => number;
  #token: string | undefined;
  #refreshAt = 0;
  #inFlight: Promise<string> | undefined;

  constructor(fetch: () => Promise<IssuedToken>, now: () => number = Date.now) {
    this.#fetch = fetch;
    this.#now = now;
  }

  /**
   * Forgets `token` if it is the one held, so the next get() fetches another: for a token a server
   * refused as UNAUTHENTICATED (bound to a certificate this workload has since replaced, or
   * revoked), which would otherwise be presented again until it ages out.
   */
  invalidate(token: string): void {
    if (this.#token === token) this.#token = undefined;
  }

  get(): Promise<string> {
    if (this.#token !== undefined && this.#now() < this.#refreshAt) return Promise.resolve(this.#token);
    this.#inFlight ??= this.#fetch().then(
      (issued) => {
        this.#token = issued.access_token;
        this.#refreshAt = this.#now() + Number(issued.expires_in) * 800;
        this.#inFlight = undefined;
        return issued.access_token;
      },
      (err: unknown) => {
        this.#inFlight = undefined;
        throw err;
      },
    );
    return this.#inFlight;
  }
}
