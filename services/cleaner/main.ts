// The cleaner process: no API of its own; every interval it deletes flagged images with its
// service token. Only its health listener accepts connections.
import { status } from '@grpc/grpc-js';
import { TwokeyError } from '../authz/errors.ts';
import { envDurationMs, type Env } from '../mesh-runtime/env.ts';
import { MeshRuntime } from '../mesh-runtime/mesh-runtime.ts';
import { ImageStoreClient, bearer, unary } from '../mesh-runtime/protos.ts';
import type { RunningService } from '../mesh-runtime/running-service.ts';
import { CleanerJob, type CleanerImagesPort } from './cleaner-job.ts';

const MAX_TIMER_MS = 2 ** 31 - 1;

export async function serve(env: Env): Promise<RunningService> {
  const runtime = await MeshRuntime.start('cleaner', env, []);
  try {
    const log = runtime.logger;
    const intervalMs = envDurationMs(env, 'TWOKEY_CLEANER_INTERVAL', '24h');
    // Node runs a timer longer than this every millisecond instead: a 30d interval would sweep nonstop.
    if (intervalMs > MAX_TIMER_MS) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `TWOKEY_CLEANER_INTERVAL: at most ${Math.floor(MAX_TIMER_MS / 86_400_000)} days (a timer limit)`);
    }
    const store = runtime.client(ImageStoreClient, 'image-store', 'TWOKEY_IMAGE_STORE_ADDR', 'image-store:8443', false);
    const serviceToken = runtime.serviceToken();
    // A token refused as UNAUTHENTICATED (the cleaner's certificate was replaced, or the token's key
    // or jti withdrawn) is fetched again for the next sweep rather than presented until it ages out.
    const refused = (token: string) => (err: unknown): never => {
      if ((err as { code?: unknown }).code === status.UNAUTHENTICATED) serviceToken.invalidate(token);
      throw err;
    };
    const images: CleanerImagesPort = {
      listTagged: async (tag, pageToken, token) => {
        const res = await unary<{ images: { id: string; owner: string }[]; next_page_token: string }>(
          store,
          'ListImages',
          { owner: '', tag, page_size: 100, page_token: pageToken },
          bearer(token),
        ).catch(refused(token));
        return { images: res.images.map((i) => ({ id: i.id, owner: i.owner })), nextPageToken: res.next_page_token };
      },
      deleteImage: async (id, token) => {
        await unary(store, 'DeleteImage', { id }, bearer(token)).catch(refused(token));
      },
    };
    const job = new CleanerJob({ images, serviceToken: () => serviceToken.get(), logger: log });
    let sweeping: Promise<unknown> | undefined;
    const tick = (): void => {
      // A sweep still running when the next is due is left to finish: two would delete the same ids.
      if (sweeping !== undefined) return;
      sweeping = job
        .sweep()
        .catch((err: unknown) => log.warn({ event: 'cleaner.sweep_failed', err: (err as Error).message }, 'sweep failed; next interval retries'))
        .finally(() => (sweeping = undefined));
    };
    const timer = setInterval(tick, intervalMs);
    runtime.onClose(async () => {
      clearInterval(timer);
      await sweeping;
    });
    tick();
    runtime.serving({ interval_ms: intervalMs });
    return runtime;
  } catch (err) {
    await runtime.close();
    throw err;
  }
}
