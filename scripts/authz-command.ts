// `twokey authz`: the library's offline check, reading a state directory's token keys through auth's own storage code;
// and the external authorizer (serve) with the proxy configurations that put it in front of other servers.
import { publishedJwks } from '../services/auth/published-keys.ts';
import { run as runCheck, usage as checkUsage } from '../services/authz/check-cli.ts';
import { AUTHORIZER_SUBCOMMANDS, runAuthorizerCommand, usage as authorizerUsage } from '../services/authorizer/authorizer-cli.ts';

export const usage = `${checkUsage}\n${authorizerUsage}`;

export function run(args: string[]): Promise<number> {
  const first = args[0];
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    process.stdout.write(usage);
    return Promise.resolve(first === undefined ? 2 : 0);
  }
  const sub = AUTHORIZER_SUBCOMMANDS.find((s) => s === args[0]);
  if (sub !== undefined) return runAuthorizerCommand(sub, args.slice(1));
  return runCheck(args, { publishedJwks });
}
