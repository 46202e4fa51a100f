// `twokey authz envoy-config`: every field of the bootstrap it writes exists in Envoy's own protos, and the fail-closed settings are there.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { expect } from 'chai';
import protobuf from 'protobufjs';
import { parse as parseYaml } from 'yaml';
import { renderEnvoyConfig, type EnvoyConfigOptions } from '../../services/authorizer/envoy-config.ts';
import { AUTHORIZER_PROTO_ROOT } from '../../services/authorizer/proxy-admission.ts';
import { ENVOY_DEPS } from './envoy-side.ts';

const INCLUDE = ['envoy-api', 'googleapis', 'xds', 'protoc-gen-validate'].map((d) => join(ENVOY_DEPS, d));
const FILES = [
  'envoy/config/bootstrap/v3/bootstrap.proto',
  'envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
];
// Well-known types whose JSON form is a scalar (Duration "1s", wrappers) or free-form (Struct).
const SCALAR_JSON = new Set(['.google.protobuf.Duration', '.google.protobuf.BoolValue', '.google.protobuf.UInt32Value', '.google.protobuf.UInt64Value', '.google.protobuf.StringValue', '.google.protobuf.DoubleValue']);
const FREE_FORM = new Set(['.google.protobuf.Struct', '.google.protobuf.Value']);

function loadEnvoy(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => INCLUDE.map((d) => join(d, target)).find((p) => existsSync(p)) ?? target;
  root.loadSync(FILES, { keepCase: true });
  root.resolveAll();
  return root;
}

/** Problems with `value` as the JSON/YAML form of message `type`: unknown fields, bad enum names, two members of one oneof, unknown Any types. */
function problems(root: protobuf.Root, type: protobuf.Type, value: unknown, path: string): string[] {
  const name = type.fullName;
  if (SCALAR_JSON.has(name)) return typeof value === 'object' ? [`${path}: ${name} must be a scalar`] : [];
  if (FREE_FORM.has(name)) return [];
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return [`${path}: expected a ${name} object`];
  const out: string[] = [];
  const obj = value as Record<string, unknown>;
  if (name === '.google.protobuf.Any') {
    const url = obj['@type'];
    if (typeof url !== 'string' || !url.startsWith('type.googleapis.com/')) return [`${path}: Any without a type.googleapis.com/ @type`];
    let inner: protobuf.Type;
    try {
      inner = root.lookupType(url.slice('type.googleapis.com/'.length));
    } catch {
      return [`${path}: unknown type ${url}`];
    }
    const { '@type': _t, ...rest } = obj;
    return problems(root, inner, rest, `${path}<${inner.name}>`);
  }
  for (const oneof of type.oneofsArray) {
    const set = oneof.fieldsArray.filter((f) => obj[f.name] !== undefined).map((f) => f.name);
    if (set.length > 1) out.push(`${path}: ${set.join(' and ')} are one oneof (${oneof.name})`);
  }
  for (const [key, v] of Object.entries(obj)) {
    const field = type.fields[key];
    if (field === undefined) {
      out.push(`${path}.${key}: no such field in ${name}`);
      continue;
    }
    field.resolve();
    const check = (item: unknown, at: string): void => {
      if (field.resolvedType instanceof protobuf.Type) out.push(...problems(root, field.resolvedType, item, at));
      else if (field.resolvedType instanceof protobuf.Enum) {
        if (typeof item !== 'string' || field.resolvedType.values[item] === undefined) out.push(`${at}: ${JSON.stringify(item)} is not a value of ${field.resolvedType.fullName}`);
      }
    };
    if (field.map) for (const [k, item] of Object.entries(v as object)) check(item, `${path}.${key}[${k}]`);
    else if (field.repeated) {
      if (!Array.isArray(v)) out.push(`${path}.${key}: expected a list`);
      else v.forEach((item, i) => check(item, `${path}.${key}[${i}]`));
    } else check(v, `${path}.${key}`);
  }
  return out;
}

const MTLS: EnvoyConfigOptions = {
  service: 'spiffe://twokey.local/ns/notes/sa/notes',
  listen: '0.0.0.0:8443',
  backend: '127.0.0.1:50051',
  svidDir: '/var/run/twokey/svid',
  authorizer: 'authorizer.twokey.svc:8443',
  authorizerId: 'spiffe://twokey.local/ns/twokey/sa/authorizer',
};

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => (statSync(join(dir, name)).isDirectory() ? filesUnder(join(dir, name)) : [join(dir, name)]));
}

describe("the authorizer's copy of Envoy's protos", () => {
  it('is byte for byte the files Envoy publishes (as @grpc/grpc-js-xds ships them)', () => {
    const files = filesUnder(AUTHORIZER_PROTO_ROOT).map((f) => relative(AUTHORIZER_PROTO_ROOT, f));
    expect(files).to.have.length(19);
    for (const file of files) {
      const source = INCLUDE.map((d) => join(d, file)).find((p) => existsSync(p));
      expect(source, file).to.not.equal(undefined);
      expect(readFileSync(join(AUTHORIZER_PROTO_ROOT, file)).equals(readFileSync(source!)), file).to.equal(true);
    }
  });
});

describe('twokey authz envoy-config', () => {
  const root = loadEnvoy();
  const Bootstrap = root.lookupType('envoy.config.bootstrap.v3.Bootstrap');

  for (const [label, options] of [
    ['mTLS to the authorizer', MTLS],
    ['a local authorizer on a unix socket', { ...MTLS, authorizer: 'unix:/run/twokey/authz.sock', authorizerId: undefined }],
  ] as const) {
    it(`writes a bootstrap whose every field is in Envoy's protos (${label})`, () => {
      expect(problems(root, Bootstrap, parseYaml(renderEnvoyConfig(options)), 'bootstrap')).to.deep.equal([]);
    });
  }

  it('catches a misspelt field (the check itself works)', () => {
    const bad = renderEnvoyConfig(MTLS).replace('include_peer_certificate', 'include_peer_certificates');
    expect(problems(root, Bootstrap, parseYaml(bad), 'bootstrap')).to.deep.equal([
      'bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config<HttpConnectionManager>.http_filters[0].typed_config<ExtAuthz>.include_peer_certificates: no such field in .envoy.extensions.filters.http.ext_authz.v3.ExtAuthz',
    ]);
  });

  it('fails closed: the peer certificate forwarded, no allow on failure, 503 on error, mTLS to an authorizer checked by SPIFFE ID', () => {
    const config = parseYaml(renderEnvoyConfig(MTLS));
    const listener = config.static_resources.listeners[0];
    const downstream = listener.filter_chains[0].transport_socket.typed_config;
    expect(downstream.require_client_certificate).to.equal(true);
    expect(downstream.common_tls_context.tls_params).to.deep.equal({ tls_minimum_protocol_version: 'TLSv1_3', tls_maximum_protocol_version: 'TLSv1_3' });
    const hcm = listener.filter_chains[0].filters[0].typed_config;
    expect(hcm.forward_client_cert_details).to.equal('SANITIZE');
    const extAuthz = hcm.http_filters[0].typed_config;
    expect(extAuthz).to.deep.include({ include_peer_certificate: true, failure_mode_allow: false, status_on_error: { code: 'ServiceUnavailable' }, transport_api_version: 'V3' });
    expect(extAuthz.grpc_service).to.deep.equal({ envoy_grpc: { cluster_name: 'twokey_authorizer' }, timeout: '1.000s' });
    const authorizer = config.static_resources.clusters.find((c: { name: string }) => c.name === 'twokey_authorizer');
    expect(authorizer.type).to.equal('STRICT_DNS');
    expect(authorizer.transport_socket.typed_config.common_tls_context.validation_context.match_typed_subject_alt_names).to.deep.equal([
      { san_type: 'URI', matcher: { exact: 'spiffe://twokey.local/ns/twokey/sa/authorizer' } },
    ]);
  });

  it('refuses an authorizer across the network without the SPIFFE ID its certificate must carry', () => {
    expect(() => renderEnvoyConfig({ ...MTLS, authorizerId: undefined })).to.throw(/--authorizer-id is required/);
  });
});
