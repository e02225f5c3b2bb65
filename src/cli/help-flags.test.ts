// Every flag a help text documents parses with the values the help text itself gives (defaults,
// "e.g." examples, "-1 = forever", alternatives), so that help and parser cannot drift apart.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAIN_HELP } from './main.js';
import { parseProxyArgs } from './commands/proxy.js';
import { parseRegisterArgs } from './commands/register.js';
import { parseRenderArgs } from './commands/render.js';
import { parseRunArgs } from './commands/run.js';
import { parseRolloutArgs } from '../rollout/options.js';
import { parseDnsArgs } from './commands/dns.js';
import { servicesCommand } from './commands/services.js';

const CONSUL = 'consul://127.0.0.1:8500';
const dir = mkdtempSync(join(tmpdir(), 'hm-help-'));
const SRC = join(dir, 'site.conf.hbs');
const DEST = join(dir, 'site.conf');
const CONFIG = join(dir, 'render.yaml');
const TOKEN_FILE = join(dir, 'api-token');
writeFileSync(TOKEN_FILE, 'a-status-api-token\n');
writeFileSync(SRC, '{{#each services}}{{name}}\n{{/each}}');
writeFileSync(CONFIG, `registry: ${CONSUL}\ntemplates:\n  - source: ${SRC}\n    destination: ${join(dir, 'from-config.conf')}\n`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Flag {
  name: string;
  /** `<s>`, `<src>:<dest>[:<cmd>]`…; undefined for a boolean flag. */
  placeholder?: string;
  description: string;
}

/** The flags a help text names, with their placeholder and description (continuation lines included). */
function flagsOf(help: string): Map<string, Flag> {
  const flags = new Map<string, Flag>();
  const lines = help.split('\n');
  let last: Flag | undefined;
  for (const line of lines) {
    // A flag line: `  --name <ph>   description`, `  -h, --help   this help`, or a compact list of flags.
    if (/^\s+(-\w, )?--[a-z]/.test(line)) {
      const specs = [...line.matchAll(/(?:^|\s)--([a-z][a-z-]*)(?: (<\S+))?/g)];
      const descStart = /^\s+(?:-\w, )?--[a-z][a-z-]*(?: <\S+)?\s{2,}(?!--)(.*)$/.exec(line);
      for (const [i, m] of specs.entries()) {
        const f: Flag = { name: m[1], placeholder: m[2], description: i === 0 && descStart && specs.length === 1 ? descStart[1] : '' };
        const prev = flags.get(f.name);
        flags.set(f.name, { name: f.name, placeholder: prev?.placeholder ?? f.placeholder, description: [prev?.description, f.description].filter(Boolean).join(' ') });
      }
      last = specs.length === 1 ? flags.get(specs[0][1]) : undefined;
    } else if (last && /^\s{20,}\S/.test(line)) {
      last.description += ` ${line.trim()}`;
    } else last = undefined;
  }
  return flags;
}

/** Values a description documents for its flag. */
function documentedValues(f: Flag): string[] {
  const out = new Set<string>();
  const d = f.description;
  for (const m of d.matchAll(/\(default ([^\s(),;]+)\)/g)) out.add(m[1]);
  for (const m of d.matchAll(/(?:^|\s)(-?\d+) = \w/g)) out.add(m[1]);
  for (const m of d.matchAll(/e\.g\. (?:'([^']+)'|([^\s,;)]+))/g)) out.add(m[1] ?? m[2]);
  for (const m of d.matchAll(/(?:^|\s)([a-z][a-z-]*(?: \| [a-z][a-z-]*)+)/g)) for (const v of m[1].split(' | ')) out.add(v);
  for (const m of d.matchAll(/[a-z][a-z0-9+.-]*:\/\/[^\s),]*/g)) out.add(m[0].replace(/[:.;]$/, ''));
  const words = /^([a-z]+(?:, [a-z]+)+) \(default/.exec(d);
  if (words) for (const v of words[1].split(', ')) out.add(v);
  // Alternatives in the placeholder: <json|pretty>, <host:port|off>.
  if (f.placeholder && /^<[^<>]*\|[^<>]*>$/.test(f.placeholder)) {
    for (const v of f.placeholder.slice(1, -1).split('|')) if (/^[a-z-]+$/.test(v)) out.add(v);
  }
  for (const v of NOT_A_VALUE) out.delete(v);
  return [...out];
}

/** Defaults that name another flag rather than a value. */
const NOT_A_VALUE = ['ttl/3', 'n', 'uri'];

/** Example values for flags whose help text gives none (or too few), by flag name. */
const EXAMPLES: Record<string, string[]> = {
  hostname: ['node-1'],
  ip: ['127.0.0.1', '::1'],
  tags: ['dc1,edge', 'a\\,b'],
  ttl: ['0', '2'],
  'ttl-refresh': ['10'],
  'retry-attempts': ['0', '5'],
  api: ['127.0.0.1:0'],
  listen: ['127.0.0.1:0'],
  domain: ['example.com'],
  'health-check': ['/healthz'],
  status: ['passing,warning'],
  template: [`${SRC}:${join(dir, 'second.conf')}:nginx -s reload`],
  check: ['true'],
  verify: ['plain', 'nginx:/run/nginx.pid', 'haproxy:/run/haproxy-master.sock'],
  perms: ['0644'],
  config: [CONFIG],
  batch: ['2', '50%'],
  dns: ['127.0.0.1:0', '[::1]:5300'],
  'dns-domain': ['consul', 'service.internal'],
  'dns-ttl': ['0', '5'],
  datacenter: ['dc1', 'eu-west-1'],
  recursor: ['127.0.0.1:5353'],
  'services-dir': [dir],
  image: ['hm-test:2'],
  via: ['http://127.0.0.1:8080/healthz'],
  'via-host': ['web.example.test'],
  'state-dir': [dir],
  docker: ['unix:///var/run/docker.sock', 'tcp://127.0.0.1:2375'],
  'api-token': ['a-status-api-token'],
  'api-token-file': [TOKEN_FILE],
};

/** Flags that are only meaningful with another one. */
const COMPANIONS: Record<string, string[]> = {
  'health-interval': ['--health-check', '/healthz'],
  'via-host': ['--via', 'http://127.0.0.1:8080/healthz'],
  // --docker off registers only service files.
  docker: ['--services-dir', dir],
  // A token is for a status API: off by default in some commands.
  'api-token': ['--api', '127.0.0.1:8081'],
  'api-token-file': ['--api', '127.0.0.1:8081'],
};

type Parser = (args: string[]) => Promise<unknown> | unknown;

const PARSERS: Record<string, Parser> = {
  register: (args) => parseRegisterArgs([...args, CONSUL], {}),
  proxy: (args) => parseProxyArgs([...args, CONSUL]),
  render: (args) => parseRenderArgs([CONSUL, '--template', `${SRC}:${DEST}`, ...args]),
  run: (args) => parseRunArgs(['--template', `${SRC}:${DEST}`, ...args], {}),
  rollout: (args) => parseRolloutArgs(['web', ...args], {}),
  dns: (args) => parseDnsArgs([...args, CONSUL]),
  // `services` has no parser of its own: with --help it parses its flags and stops before the registry.
  services: async (args) => {
    const code = await servicesCommand([...args, '--help'], () => undefined);
    if (code !== 0) throw new Error(`exit ${code}`);
  },
};

const commandNames = [...MAIN_HELP.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]);

async function helpOf(command: string): Promise<string> {
  const mod = (await import(/* @vite-ignore */ `./commands/${command}.js`)) as Record<string, unknown>;
  const help = Object.entries(mod).find(([k, v]) => k.endsWith('_HELP') && typeof v === 'string' && v.startsWith(`Usage: harbormaster ${command} `));
  if (!help) throw new Error(`src/cli/commands/${command}.ts exports no *_HELP starting "Usage: harbormaster ${command}"`);
  return help[1] as string;
}

const helps = Object.fromEntries(await Promise.all(commandNames.map(async (c) => [c, await helpOf(c)] as const)));
/** Help texts whose flags a command takes too: `run` lists register's and render's flags without repeating them. */
const BORROWS: Record<string, string[]> = { run: ['register', 'render'] };

function valuesFor(command: string, f: Flag): string[] {
  const described = [command, ...(BORROWS[command] ?? [])].map((c) => flagsOf(helps[c]).get(f.name)).filter((g): g is Flag => g !== undefined);
  const documented = described.flatMap((g) => documentedValues({ ...g, placeholder: g.placeholder ?? f.placeholder }));
  return [...new Set([...documented, ...(EXAMPLES[f.name] ?? [])])];
}

describe('help texts', () => {
  it('lists the commands of main.ts, each with a help text and a parser here', () => {
    expect(commandNames).toEqual(expect.arrayContaining(['register', 'services', 'render', 'proxy', 'run']));
    for (const c of commandNames) expect(PARSERS[c], `parser for ${c}`).toBeDefined();
  });

  it('finds the flags of every help text, with a description', () => {
    const reg = flagsOf(helps.register);
    expect([...reg.keys()]).toEqual(expect.arrayContaining(['hostname', 'ttl', 'retry-attempts', 'keep-on-exit', 'help']));
    expect(reg.get('retry-attempts')).toMatchObject({ placeholder: '<n>' });
    expect(documentedValues(reg.get('retry-attempts')!)).toEqual(['-1']);
    expect(documentedValues(reg.get('deregister')!).sort()).toEqual(['always', 'on-success']);
    expect(flagsOf(helps.run).get('ttl-refresh')).toMatchObject({ placeholder: '<s>' });
  });
});

for (const command of commandNames) {
  describe(`${command}: every documented flag parses with its documented values`, () => {
    const parser = PARSERS[command];
    const flags = [...flagsOf(helps[command]).values()];
    const cases: Array<[string, string[]]> = flags.flatMap((f): Array<[string, string[]]> => {
      // A companion flag only where the command takes it (rollout's --docker has no --services-dir).
      const takes = (flag: string) => [command, ...(BORROWS[command] ?? [])].some((c) => flagsOf(helps[c]).has(flag.replace(/^--/, '')));
      const companion = (COMPANIONS[f.name] ?? []).filter((_, i, all) => takes(all[i % 2 === 0 ? i : i - 1]));
      if (!f.placeholder) return [[`--${f.name}`, [...companion, `--${f.name}`]]];
      return valuesFor(command, f).flatMap((v): Array<[string, string[]]> => [
        [`--${f.name} ${v}`, [...companion, `--${f.name}`, v]],
        [`--${f.name}=${v}`, [...companion, `--${f.name}=${v}`]],
      ]);
    });

    it('documents a value or has an example for every flag that takes one', () => {
      for (const f of flags) if (f.placeholder) expect(valuesFor(command, f), `--${f.name} ${f.placeholder}`).not.toEqual([]);
    });

    it.each(cases)('%s', async (_label, args) => {
      const outcome = await Promise.resolve()
        .then(() => parser([...args]))
        .then(
          () => 'parsed',
          (err: Error) => `${err.name}: ${err.message}`,
        );
      expect(outcome).toBe('parsed');
    });
  });
}

describe('negative numbers and zero as values', () => {
  it.each([
    [['--retry-attempts', '-1'], -1],
    [['--retry-attempts=-1'], -1],
    [['--retry-attempts', '-1', '--retry-interval', '50'], -1],
  ])('register %j', (args, attempts) => {
    expect(parseRegisterArgs([...args, CONSUL], {})?.retryAttempts).toBe(attempts);
  });

  it('register --ttl 0', () => {
    expect(parseRegisterArgs(['--ttl', '0', CONSUL], {})?.ttl).toBe(0);
  });

  it('run passes --retry-attempts -1 on to the registrator', () => {
    expect(parseRunArgs(['--retry-attempts', '-1', '--ttl', '0'], {})?.register).toMatchObject({ retryAttempts: -1, ttl: 0 });
  });

  it('a negative number where it is out of range is the flag\'s own error, not "ambiguous"', () => {
    expect(() => parseRegisterArgs(['--ttl', '-5', CONSUL], {})).toThrow('--ttl -5: must be between 0 and 86400');
    expect(() => parseProxyArgs(['--retries', '-1', CONSUL])).toThrow('--retries -1: must be between 0 and 10');
  });
});
