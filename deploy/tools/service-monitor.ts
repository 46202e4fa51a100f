// A checked schema for the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1), offline.
//
// ServiceMonitor is a custom resource, so kubernetes-models has no model of it. This checks the
// subset of the operator's CRD (v0.8x) that twokey's manifests use, strictly: a field outside it
// is a problem, as the API server's strict field validation would make a misspelt one.
import { isObject, type JsonObject, type K8sObject } from './manifest.ts';

export const SERVICE_MONITOR_API = 'monitoring.coreos.com/v1';

// The CRD's pattern for durations (interval, scrapeTimeout).
const DURATION = /^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$/;
const DNS_1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

type Check = (value: unknown, at: string, problems: string[]) => void;

function fields(shape: Record<string, Check>, required: readonly string[] = []): Check {
  return (value, at, problems) => {
    if (!isObject(value)) return void problems.push(`${at} must be a mapping`);
    for (const key of required) if (value[key] === undefined) problems.push(`${at}/${key} is required`);
    for (const [key, v] of Object.entries(value)) {
      const check = shape[key];
      if (check === undefined) problems.push(`${at}/${key} is not a field of ${SERVICE_MONITOR_API} ServiceMonitor (as checked here)`);
      else check(v, `${at}/${key}`, problems);
    }
  };
}

const string: Check = (v, at, p) => void (typeof v !== 'string' && p.push(`${at} must be a string`));
const boolean: Check = (v, at, p) => void (typeof v !== 'boolean' && p.push(`${at} must be a boolean`));
const matching = (re: RegExp, what: string): Check => (v, at, p) => void ((typeof v !== 'string' || !re.test(v)) && p.push(`${at} must be ${what}`));
const oneOf = (values: readonly string[]): Check => (v, at, p) => void (!values.includes(v as string) && p.push(`${at} must be one of ${JSON.stringify(values)}`));
const list = (item: Check, nonEmpty = false): Check => (v, at, p) => {
  if (!Array.isArray(v)) return void p.push(`${at} must be a list`);
  if (nonEmpty && v.length === 0) p.push(`${at} must not be empty`);
  v.forEach((x, i) => item(x, `${at}/${i}`, p));
};
const stringMap = (valueCheck: Check = string): Check => (v, at, p) => {
  if (!isObject(v)) return void p.push(`${at} must be a mapping of strings`);
  for (const [k, x] of Object.entries(v)) valueCheck(x, `${at}/${k}`, p);
};

const labelSelector = fields({
  matchLabels: stringMap(matching(LABEL_VALUE, 'a label value')),
  matchExpressions: list(fields({ key: string, operator: oneOf(['In', 'NotIn', 'Exists', 'DoesNotExist']), values: list(string) }, ['key', 'operator'])),
});

const endpoint = fields({
  port: string,
  targetPort: (v, at, p) => void (typeof v !== 'string' && !Number.isInteger(v) && p.push(`${at} must be a port number or name`)),
  path: matching(/^\//, 'an absolute path'),
  scheme: oneOf(['http', 'https']),
  interval: matching(DURATION, 'a duration like 30s'),
  scrapeTimeout: matching(DURATION, 'a duration like 10s'),
  honorLabels: boolean,
  honorTimestamps: boolean,
});

const serviceMonitor = fields(
  {
    apiVersion: oneOf([SERVICE_MONITOR_API]),
    kind: oneOf(['ServiceMonitor']),
    metadata: fields(
      { name: matching(DNS_1123_SUBDOMAIN, 'a DNS-1123 subdomain'), namespace: string, labels: stringMap(matching(LABEL_VALUE, 'a label value')), annotations: stringMap() },
      ['name'],
    ),
    spec: fields(
      {
        jobLabel: string,
        targetLabels: list(string),
        podTargetLabels: list(string),
        selector: labelSelector,
        namespaceSelector: fields({ any: boolean, matchNames: list(string) }),
        endpoints: list(endpoint, true),
      },
      ['selector', 'endpoints'],
    ),
  },
  ['apiVersion', 'kind', 'metadata', 'spec'],
);

/** The problems of one ServiceMonitor, each naming the path of the field at fault. */
export function serviceMonitorProblems(obj: K8sObject): string[] {
  const problems: string[] = [];
  serviceMonitor(obj, '', problems);
  const spec = (obj as JsonObject)['spec'];
  // Either every namespace or a list of them, as the operator reads it.
  if (isObject(spec) && isObject(spec['namespaceSelector']) && spec['namespaceSelector']['any'] === true && spec['namespaceSelector']['matchNames'] !== undefined) {
    problems.push('/spec/namespaceSelector sets both any and matchNames');
  }
  return problems;
}
