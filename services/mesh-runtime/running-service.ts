// What every service entry module (services/<name>/main.ts) exports, so `twokey serve` can run it.

/** A started service. */
export interface RunningService {
  /** Stops accepting calls, finishes or cancels in-flight work, closes databases. */
  close(): Promise<void>;
}

/** A service entry module: starts the service from its environment. */
export type ServiceEntry = { serve(env: NodeJS.ProcessEnv): Promise<RunningService> };
