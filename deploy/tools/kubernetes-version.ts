// The Kubernetes release the manifests are written and checked for, apart from the schema
// validator so that naming it does not load the optional packages the validator needs.
export const KUBERNETES_VERSION = 'v1.33.0';
