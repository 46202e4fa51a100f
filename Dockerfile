# syntax=docker/dockerfile:1
# One image for every twokey service; the argument picks the service:
#   docker build -t twokey:0.1.0 .
#   docker run twokey:0.1.0 gateway        (auth | gateway | image-store | tagging | cleaner | authorizer)
# Configuration comes from the environment and mounted files (see deploy/).

# Node 24 LTS, the runtime twokey is built and tested on; the same image in both stages.
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# The full install (TypeScript included) compiles the sources; no dependency builds native code.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY proto ./proto
COPY services ./services
COPY certs-ca ./certs-ca
COPY scripts ./scripts
COPY deploy/tools ./deploy/tools
# Tests, the CA directory and the manifests never enter the build context (.dockerignore). The
# image keeps the compiled dist/, the protos it loads at run time and the production dependencies,
# plus the example services' own dependencies: devDependencies of the package (adopters do not
# install them), kept here from the lock-file-verified install rather than fetched again.
RUN npm run build \
 && mkdir /tmp/example-deps && mv node_modules/exifr /tmp/example-deps/ \
 && npm prune --omit=dev --no-audit --no-fund \
 && mv /tmp/example-deps/* node_modules/ && rmdir /tmp/example-deps \
 && npm cache clean --force \
 && find services certs-ca scripts deploy -name '*.ts' -delete \
 && rm -f tsconfig.json tsconfig.build.json

FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    HOME=/tmp
WORKDIR /app
# Owned by root and not writable by the service user: the code cannot be changed at run time.
COPY --from=build /app /app
# A numeric uid, so Kubernetes can verify runAsNonRoot; deploy/ runs pods with the same uid.
USER 10001:10001
# mesh mTLS gRPC, plaintext health (probes only), gateway public TLS, auth HTTPS JWKS
EXPOSE 8443 8081 9443 8444
ENTRYPOINT ["node", "dist/scripts/twokey.js", "serve"]
