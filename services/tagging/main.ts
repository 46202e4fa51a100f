// The tagging process: SuggestTags over mTLS (acting on the caller's forwarded user token), and
// the asynchronous worker that tags new uploads with their location.
import { status, type Client, type ClientReadableStream } from '@grpc/grpc-js';
import { TwokeyError } from '../authz/errors.ts';
import { CachedToken, type IssuedToken } from '../mesh-runtime/cached-token.ts';
import { randomUUID } from 'node:crypto';
import { dataDir, type Env } from '../mesh-runtime/env.ts';
import { unaryHandler } from '../mesh-runtime/handlers.ts';
import { postgresConfig } from '../mesh-runtime/database-config.ts';
import { MeshRuntime } from '../mesh-runtime/mesh-runtime.ts';
import { ImageStoreClient, TaggingClient, bearer, unary } from '../mesh-runtime/protos.ts';
import type { RunningService } from '../mesh-runtime/running-service.ts';
import { locationTags, readLocation } from './exif-location.ts';
import { openCursorStore } from './tagging-storage.ts';
import { TaggingWorker, type ImageStorePort, type UploadEvent } from './tagging-worker.ts';

interface ImageReply {
  id: string;
  owner: string;
  tags: string[];
  content: Buffer;
}

// A watch stream is re-opened this often, so it never outlives the service token it began with.
const WATCH_WINDOW_MS = 4 * 60_000;

export async function serve(env: Env): Promise<RunningService> {
  const runtime = await MeshRuntime.start('tagging', env, ['twokey.tagging.v1.Tagging']);
  try {
    const log = runtime.logger;
    const imageStoreId = runtime.workloadId('image-store');
    const auth = runtime.authClient();
    // Inside SuggestTags this client forwards the caller's user token (propagation).
    const store = runtime.client(ImageStoreClient, 'image-store', 'TWOKEY_IMAGE_STORE_ADDR', 'image-store:8443');
    const { mesh } = await runtime.joinMesh();

    mesh.server.addService(TaggingClient.service, {
      SuggestTags: unaryHandler(log, async (req: { image_id: string }) => {
        const image = await unary<ImageReply>(store, 'GetImage', { id: req.image_id, without_content: false });
        const location = await readLocation(image.content);
        if (location === undefined) return { tags: [], has_location: false, latitude: 0, longitude: 0 };
        return { tags: locationTags(location), has_location: true, latitude: location.latitude, longitude: location.longitude };
      }),
    });
    const port = await mesh.listen(runtime.config.listen);

    const serviceToken = runtime.serviceToken();
    const delegated = new Map<string, CachedToken>();
    const delegatedToken = (owner: string): Promise<string> => {
      let cached = delegated.get(owner);
      if (cached === undefined) {
        cached = new CachedToken(() =>
          unary<IssuedToken>(auth, 'ExchangeToken', { subject_token: '', subject_user: owner, scope: 'images:tag', audience: imageStoreId }),
        );
        // Bounded: one entry per recent owner is plenty for a worker that handles one event at a time.
        if (delegated.size >= 1000) delegated.clear();
        delegated.set(owner, cached);
      }
      return cached.get();
    };
    // A token refused as UNAUTHENTICATED (tagging's certificate was replaced, or the token's key or
    // jti withdrawn) is fetched again for the retry rather than presented until it ages out.
    const refused = (token: string, cached: () => Iterable<CachedToken>) => (err: unknown): never => {
      if ((err as { code?: unknown }).code === status.UNAUTHENTICATED) for (const c of cached()) c.invalidate(token);
      throw err;
    };
    const images: ImageStorePort = {
      watch: (afterSequence, token, signal) => watchEvents(store, afterSequence, token, signal, refused(token, () => [serviceToken])),
      getImage: (id, token) =>
        unary<ImageReply>(store, 'GetImage', { id, without_content: false }, bearer(token)).catch(refused(token, () => [serviceToken])),
      // Keyed (AIP-155): the client may repeat it on another image-store replica, and a repeat writes nothing.
      setTags: async (id, tags, token) => {
        await unary(store, 'SetTags', { id, tags, request_id: randomUUID() }, bearer(token)).catch(refused(token, () => delegated.values()));
      },
    };
    const cursor = await openCursorStore(env, dataDir(env));
    runtime.onClose(() => cursor.close());
    runtime.health.watchDependency(() => cursor.ping());
    const worker = new TaggingWorker({
      images,
      tokens: { serviceToken: () => serviceToken.get(), delegatedToken },
      cursor,
      logger: log,
      // Replicas on PostgreSQL each hold the lease under their own name; the one SQLite process uses a
      // fixed name, so after a crash it takes its own lease back at once instead of after the term.
      holder: postgresConfig(env) === undefined ? 'tagging' : `tagging-${randomUUID()}`,
    });
    const controller = new AbortController();
    const running = worker.run(controller.signal);
    runtime.onClose(async () => {
      controller.abort();
      await running;
    });
    runtime.serving({ mesh_port: port });
    return runtime;
  } catch (err) {
    await runtime.close();
    throw err;
  }
}

/** WatchImages as an async iterable that ends when the stream ends or `signal` aborts. */
async function* watchEvents(
  store: Client,
  afterSequence: number,
  token: string,
  signal: AbortSignal,
  onError: (err: unknown) => never,
): AsyncGenerator<UploadEvent> {
  const watch = (store as unknown as { WatchImages: Function }).WatchImages.bind(store);
  const stream: ClientReadableStream<{ sequence: string; type: string; image_id: string; owner: string }> = watch(
    { after_sequence: String(afterSequence) },
    bearer(token),
    { deadline: Date.now() + WATCH_WINDOW_MS },
  );
  const cancel = (): void => stream.cancel();
  signal.addEventListener('abort', cancel);
  try {
    for await (const event of stream) {
      const sequence = Number(event.sequence);
      if (!Number.isSafeInteger(sequence)) throw new TwokeyError('ERR_REQUEST_INVALID', `event sequence ${event.sequence} is not an integer`);
      yield { sequence, type: event.type, imageId: event.image_id, owner: event.owner };
    }
  } catch (err) {
    // A stream closed at its deadline is the planned re-open, not a failure.
    if (signal.aborted || (err as { code?: number }).code === status.DEADLINE_EXCEEDED) return;
    onError(err);
  } finally {
    signal.removeEventListener('abort', cancel);
    stream.cancel();
  }
}
