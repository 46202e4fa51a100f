// Where the deploy tests find the kustomizations and the registry.
import { fileURLToPath } from 'node:url';

export const DEPLOY_DIR = fileURLToPath(new URL('..', import.meta.url));
export const LOCAL_OVERLAY_DIR = fileURLToPath(new URL('../overlays/local', import.meta.url));
export const POSTGRES_OVERLAY_DIR = fileURLToPath(new URL('../overlays/postgres', import.meta.url));
export const MONITORING_OVERLAY_DIR = fileURLToPath(new URL('../overlays/monitoring', import.meta.url));
export const REGISTRY_FILE = fileURLToPath(new URL('../registry.yaml', import.meta.url));
/** The copy the kustomize base generates the registry ConfigMap from. */
export const REGISTRY_COPY_FILE = fileURLToPath(new URL('../base/registry.yaml', import.meta.url));
export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const KUBERNETES_DOC = fileURLToPath(new URL('../../docs/kubernetes.md', import.meta.url));
export const SERVICES_DIR = fileURLToPath(new URL('../../services', import.meta.url));

/** Every kustomization users apply. */
export const KUSTOMIZATIONS = [
  { name: 'base (deploy/)', dir: DEPLOY_DIR },
  { name: 'overlays/local', dir: LOCAL_OVERLAY_DIR },
  { name: 'overlays/postgres', dir: POSTGRES_OVERLAY_DIR },
  { name: 'overlays/monitoring', dir: MONITORING_OVERLAY_DIR },
] as const;
