// The twokey command-line program: dispatches to the subcommand modules.
// Each subcommand module exports `run(args): Promise<number>` and a `usage` text.

interface Subcommand {
  summary: string;
  load: () => Promise<{ run(args: string[]): Promise<number>; usage: string }>;
}

// Subcommands register here as they are built; each lives beside the code it drives.
const SUBCOMMANDS: Record<string, Subcommand> = {
  ca: { summary: 'the workload CA: init, issue, sign, inspect, bundle', load: () => import('../certs-ca/ca-command.ts') },
  k8s: { summary: 'Kubernetes: certificates as Secrets, offline manifest checks', load: () => import('./k8s-command.ts') },
  serve: { summary: 'run auth (the control plane) or one service of the example mesh', load: () => import('../services/mesh-runtime/serve-command.ts') },
  users: { summary: "manage the auth service's users", load: () => import('../services/auth/users-command.ts') },
  token: { summary: 'a user token for development: login at a running auth, or mint one offline', load: () => import('../services/auth/token-command.ts') },
  revoke: { summary: 'revoke tokens, workload certificates and signing keys mesh-wide', load: () => import('../services/auth/revoke-command.ts') },
  console: { summary: 'read-only web console: policy graph, certificates, live decisions', load: () => import('./console/console-command.ts') },
  authz: { summary: 'offline policy check; the external authorizer for Envoy and nginx, and their configs', load: () => import('./authz-command.ts') },
  bundle: { summary: "serve our trust domain's SPIFFE bundle to partner trust domains", load: () => import('../services/auth/bundle-command.ts') },
};

const USAGE = () => `twokey: two-key authorization for gRPC microservices

Usage: twokey <command> [options]

Commands:
${Object.entries(SUBCOMMANDS)
  .map(([name, sub]) => `  ${name.padEnd(10)} ${sub.summary}`)
  .join('\n')}

Run 'twokey <command> --help' for the options of a command.
`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE());
    return command === undefined ? 2 : 0;
  }
  const sub = SUBCOMMANDS[command];
  if (sub === undefined) {
    process.stderr.write(`twokey: unknown command ${JSON.stringify(command)}\n\n${USAGE()}`);
    return 2;
  }
  const mod = await sub.load();
  return mod.run(rest);
}
