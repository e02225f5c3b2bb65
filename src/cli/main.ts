// Entry point: `harbormaster <command> [options]`. Usage errors exit 2 with a one-line reason.
import { readFileSync } from 'node:fs';
import { addEnvSecrets, redact, redactOutput } from '../log/redact.js';
import { UsageError } from '../registry/types.js';

type Command = (argv: string[], out: (s: string) => void) => Promise<number>;

// Loaded on use: each command pulls in its own client libraries, which costs start-up time and memory.
const COMMANDS: Record<string, { load: () => Promise<Command>; summary: string }> = {
  register: { load: async () => (await import('./commands/register.js')).registerCommand, summary: 'watch Docker and register containers in a registry (the sidecar)' },
  services: { load: async () => (await import('./commands/services.js')).servicesCommand, summary: 'list what a registry holds' },
  render: { load: async () => (await import('./commands/render.js')).renderCommand, summary: 'keep nginx / HAProxy configs rendered from the registry, checked and reloaded' },
  proxy: { load: async () => (await import('./commands/proxy.js')).proxyCommand, summary: 'route HTTP by Host and path to what a registry holds (built-in proxy)' },
  dns: { load: async () => (await import('./commands/dns.js')).dnsCommand, summary: 'answer DNS questions about what a registry holds, with Consul\'s names' },
  rollout: { load: async () => (await import('./commands/rollout.js')).rolloutCommand, summary: 'replace the containers of a service on this host, batch by batch, losing no request' },
  run: { load: async () => (await import('./commands/run.js')).runCommand, summary: 'everything on one host: register Docker containers, proxy to them, status API' },
};

export const MAIN_HELP = `Usage: harbormaster <command> [options]

Service-discovery sidecar and registrator for Docker hosts.

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(12)}${c.summary}`)
  .join('\n')}

Run 'harbormaster <command> --help' for a command's options.
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export async function main(argv: string[]): Promise<number> {
  addEnvSecrets(process.env);
  // What a command prints (`services --json`, reports) is masked like the logs.
  const out = (s: string) => void process.stdout.write(redactOutput(s));
  const [command, ...rest] = argv;
  try {
    if (!command || command === '--help' || command === '-h' || command === 'help') {
      out(MAIN_HELP);
      return command ? 0 : 2;
    }
    if (command === '--version' || command === '-v') {
      out(`${version()}\n`);
      return 0;
    }
    const c = COMMANDS[command];
    if (!c) throw new UsageError(`unknown command "${command}" (commands: ${Object.keys(COMMANDS).join(', ')})`);
    return await (await c.load())(rest, out);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`harbormaster: ${redact(err.message)}\n`);
      return 2;
    }
    process.stderr.write(`harbormaster: ${redact((err as Error).message)}\n`);
    return 1;
  }
}
