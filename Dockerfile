# syntax=docker/dockerfile:1
# One image for every twokey service; the argument picks the service:
#   docker build -t twokey:0.1.0 .
#   docker run twokey:0.1.0 gateway        (auth | gateway | image-store | tagging | cleaner)
# Configuration comes from the environment and mounted files (see deploy/).

# Both stages use the same Node image, so better-sqlite3's native module matches its runtime.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# better-sqlite3 compiles its native module when no prebuilt binary fits; the compilers stay in
# this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force
COPY tsconfig.json ./
COPY proto ./proto
COPY services ./services
COPY certs-ca ./certs-ca
# Tests, the CA directory and deploy/ never enter the build context (.dockerignore).
COPY scripts ./scripts

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
ENTRYPOINT ["node", "scripts/twokey.js", "serve"]
