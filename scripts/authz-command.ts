// `twokey authz`: the library's offline check, reading a state directory's token keys through auth's own storage code.
import { publishedJwks } from '../services/auth/published-keys.ts';
import { run as runCheck } from '../services/authz/check-cli.ts';

export { usage } from '../services/authz/check-cli.ts';

export function run(args: string[]): Promise<number> {
  return runCheck(args, { publishedJwks });
}
