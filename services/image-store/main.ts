// The image store process: ImageStore over mTLS, images and events in SQLite or PostgreSQL.
import type { ServerWritableStream } from '@grpc/grpc-js';
import { callContext } from '../authz/call-context.ts';
import { TwokeyError } from '../authz/errors.ts';
import { dataDir, type Env } from '../mesh-runtime/env.ts';
import { statusFor, unaryHandler } from '../mesh-runtime/handlers.ts';
import { MeshRuntime } from '../mesh-runtime/mesh-runtime.ts';
import { ImageStoreClient } from '../mesh-runtime/protos.ts';
import type { RunningService } from '../mesh-runtime/running-service.ts';
import { followEvents } from './event-feed.ts';
import { openImageRepository } from './image-storage.ts';
import { ImageService, toEventMessage } from './image-service.ts';

/** The verified token of the call being served; every ImageStore method requires one. */
function token() {
  const t = callContext().token;
  if (t === undefined) throw new TwokeyError('ERR_TOKEN_MISSING', 'this method needs a verified token');
  return t;
}

export async function serve(env: Env): Promise<RunningService> {
  const runtime = await MeshRuntime.start('image-store', env, ['twokey.images.v1.ImageStore']);
  try {
    const log = runtime.logger;
    const repo = await openImageRepository(env, dataDir(env));
    runtime.onClose(() => repo.close());
    runtime.health.watchDependency(() => repo.ping());
    const images = new ImageService(repo);
    const { mesh } = await runtime.joinMesh();
    const watchers = new Set<AbortController>();
    runtime.onClose(() => watchers.forEach((w) => w.abort()));

    mesh.server.addService(ImageStoreClient.service, {
      CreateImage: unaryHandler(log, async (req: Parameters<ImageService['create']>[1]) => {
        const image = await images.create(token(), req);
        log.info({ event: 'images.created', image_id: image.id, owner: image.owner, size: image.size_bytes }, 'image stored');
        return image;
      }),
      GetImage: unaryHandler(log, (req: Parameters<ImageService['get']>[1]) => images.get(token(), req)),
      ListImages: unaryHandler(log, (req: Parameters<ImageService['list']>[1]) => images.list(token(), req)),
      UpdateImage: unaryHandler(log, (req: Parameters<ImageService['update']>[1]) => images.update(token(), req)),
      SetTags: unaryHandler(log, (req: Parameters<ImageService['setTags']>[1]) => images.setTags(token(), req)),
      DeleteImage: unaryHandler(log, async (req: Parameters<ImageService['delete']>[1]) => {
        const t = token();
        const out = await images.delete(t, req);
        log.info({ event: 'images.deleted', image_id: req.id, by: t.subject, token_kind: t.kind }, 'image deleted');
        return out;
      }),
      WatchImages: (call: ServerWritableStream<{ after_sequence: string }, unknown>) => {
        const after = Number(call.request.after_sequence);
        if (!Number.isSafeInteger(after) || after < 0) {
          call.emit('error', statusFor(new TwokeyError('ERR_REQUEST_INVALID', 'after_sequence must be a non-negative integer'), log));
          return;
        }
        const controller = new AbortController();
        watchers.add(controller);
        const stop = (): void => controller.abort();
        call.on('cancelled', stop);
        call.on('close', stop);
        // The decision was made when the stream opened; it must not outlive the token it was made on.
        let expired = false;
        const expiry = setTimeout(() => {
          expired = true;
          controller.abort();
        }, Math.max(0, token().validUntilMs - Date.now()));
        followEvents(
          repo,
          after,
          (event) => call.write(toEventMessage(event)),
          // Resolves on drain, or when the stream ends, so a stalled consumer cannot strand the feed.
          () =>
            new Promise<void>((resolve) => {
              call.once('drain', () => resolve());
              controller.signal.addEventListener('abort', () => resolve(), { once: true });
            }),
          controller.signal,
        ).then(
          () => {
            clearTimeout(expiry);
            watchers.delete(controller);
            if (expired) call.emit('error', statusFor(new TwokeyError('ERR_TOKEN_EXPIRED', 'the token this stream was opened with expired; reopen it with a fresh one'), log));
            else call.end();
          },
          (err: unknown) => {
            clearTimeout(expiry);
            watchers.delete(controller);
            call.emit('error', statusFor(err, log));
          },
        );
      },
    });
    const port = await mesh.listen(runtime.config.listen);
    runtime.serving({ mesh_port: port });
    return runtime;
  } catch (err) {
    await runtime.close();
    throw err;
  }
}
