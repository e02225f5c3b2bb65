import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UsageError } from '../registry/types.js';
import {
  checkTemplateFiles,
  loadRenderFile,
  parseTemplateValue,
  parseVerify,
  parseWait,
  parseWithTokens,
  renderFileFrom,
  TEMPLATE_OPTIONS,
  templateFlags,
} from './template-spec.js';

function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).not.toContain('\n');
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
}

const flags = (argv: string[]) => {
  const { values, tokens } = parseWithTokens(argv, TEMPLATE_OPTIONS);
  return templateFlags(tokens, values);
};

describe('--template value', () => {
  it('splits at the first two colons; the rest is the command, colons included', () => {
    expect(parseTemplateValue('a.hbs:/etc/a.conf')).toEqual({ source: resolve('a.hbs'), destination: '/etc/a.conf', command: undefined });
    expect(parseTemplateValue('/t/n.hbs:/etc/n.conf:nginx -s reload -g "pid /x:y;"')).toEqual({
      source: '/t/n.hbs',
      destination: '/etc/n.conf',
      command: 'nginx -s reload -g "pid /x:y;"',
    });
    expect(parseTemplateValue('/a:/b:').command).toBeUndefined();
  });

  it('refuses what is not src:dest', () => {
    expect(usageError(() => parseTemplateValue('only-a-path'))).toContain('expected <source>:<destination>');
    expect(usageError(() => parseTemplateValue(':/b'))).toContain('source: the path is empty');
    expect(usageError(() => parseTemplateValue('/a:'))).toContain('destination: the path is empty');
    expect(usageError(() => parseTemplateValue('/a:/b\n:x'))).toContain('control characters');
  });
});

describe('--verify', () => {
  it('nginx, haproxy, plain', () => {
    expect(parseVerify('nginx:/run/nginx.pid')).toEqual({ kind: 'nginx', pidFile: '/run/nginx.pid' });
    expect(parseVerify('haproxy:/run/m.sock')).toEqual({ kind: 'haproxy', masterSocket: '/run/m.sock' });
    expect(parseVerify('plain')).toEqual({ kind: 'plain' });
    expect(usageError(() => parseVerify('apache:/x'))).toBe('--verify apache:/x: expected nginx:<pid-file>, haproxy:<master-socket> or plain');
    expect(usageError(() => parseVerify('nginx:'))).toContain('expected');
  });
});

describe('--wait', () => {
  it('min:max, min alone (max = 4 × min), zero', () => {
    expect(parseWait('500ms:3s')).toEqual({ minMs: 500, maxMs: 3000 });
    expect(parseWait('2s')).toEqual({ minMs: 2000, maxMs: 8000 });
    expect(parseWait('0:0')).toEqual({ minMs: 0, maxMs: 0 });
    expect(parseWait('1m30s:2m')).toEqual({ minMs: 90_000, maxMs: 120_000 });
  });

  it.each([
    ['3s:1s', 'max must not be shorter than min'],
    ['fast', 'is not a duration'],
    ['1s:2s:3s', 'expected <min>[:<max>]'],
    ['500', 'is not a duration'],
    [':1s', 'expected <min>[:<max>]'],
    ['2h', 'must be between'],
  ])('refuses %s', (v, msg) => {
    expect(usageError(() => parseWait(v))).toContain(msg);
  });
});

describe('template flags', () => {
  it('attach --check and --verify to the --template before them, keeping the order', () => {
    const f = flags([
      '--template', '/t/n.hbs:/etc/n.conf:nginx -s reload',
      '--check', 'nginx -t -c {{src}}',
      '--verify', 'nginx:/run/nginx.pid',
      '--template', '/t/h.hbs:/etc/h.cfg:kill -USR2 1',
      '--verify=haproxy:/run/m.sock',
      '--check', 'haproxy -c -f {{src}}',
      '--template', '/t/x.hbs:/etc/x',
      '--perms', '0640',
      '--backup',
      '--wait', '1s:5s',
      '--timeout', '10s',
    ]);
    expect(f.wait).toEqual({ minMs: 1000, maxMs: 5000 });
    expect(f.timeoutMs).toBe(10_000);
    expect(f.templates).toEqual([
      { source: '/t/n.hbs', destination: '/etc/n.conf', command: 'nginx -s reload', check: 'nginx -t -c {{src}}', verify: { kind: 'nginx', pidFile: '/run/nginx.pid' }, perms: 0o640, backup: true },
      { source: '/t/h.hbs', destination: '/etc/h.cfg', command: 'kill -USR2 1', check: 'haproxy -c -f {{src}}', verify: { kind: 'haproxy', masterSocket: '/run/m.sock' }, perms: 0o640, backup: true },
      { source: '/t/x.hbs', destination: '/etc/x', command: undefined, verify: { kind: 'plain' }, perms: 0o640, backup: true },
    ]);
  });

  it('attaches --haproxy-runtime to the --template before it, with the state file beside the destination', () => {
    const f = flags(['--template', '/t/h.hbs:/etc/h.cfg', '--haproxy-runtime', '/run/haproxy/admin.sock', '--template', '/t/n.hbs:/etc/n.conf']);
    expect(f.templates[0].haproxyRuntime).toEqual({ socket: '/run/haproxy/admin.sock', stateFile: '/etc/h.cfg.state' });
    expect(f.templates[1].haproxyRuntime).toBeUndefined();
    expect(usageError(() => flags(['--haproxy-runtime', '/s']))).toBe('--haproxy-runtime /s: must follow the --template it applies to');
    expect(usageError(() => flags(['--template', '/a:/b', '--haproxy-runtime', '/s', '--haproxy-runtime', '/t']))).toContain('already has a --haproxy-runtime');
    expect(renderFileFrom('f.yaml', { templates: [{ source: '/a', destination: '/b', haproxyRuntime: '/s' }] }).templates[0].haproxyRuntime).toEqual({ socket: '/s', stateFile: '/b.state' });
    expect(usageError(() => renderFileFrom('f.yaml', { templates: [{ source: '/a', destination: '/b', haproxyRuntime: 5 }] }))).toBe('f.yaml: templates[0].haproxyRuntime: expected a non-empty string');
  });

  it('refuses --check or --verify before any --template, and two for one template', () => {
    expect(usageError(() => flags(['--check', 'true', '--template', '/a:/b']))).toBe('--check true: must follow the --template it applies to');
    expect(usageError(() => flags(['--verify', 'plain']))).toContain('must follow the --template');
    expect(usageError(() => flags(['--template', '/a:/b', '--check', 'x', '--check', 'y']))).toContain('already has a --check');
  });

  it('refuses bad values and unknown flags with one line', () => {
    expect(usageError(() => flags(['--template', '/a:/b', '--perms', '999']))).toContain('--perms 999');
    expect(usageError(() => flags(['--timeout', '5']))).toContain('--timeout 5');
    expect(usageError(() => flags(['--template', '/a:/b', '--check', '  ']))).toContain('the command is empty');
    expect(usageError(() => parseWithTokens(['--templat', 'x'], TEMPLATE_OPTIONS))).toContain("Unknown option '--templat'");
  });
});

describe('--config file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hm-spec-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads YAML and JSON with the same fields', () => {
    const yaml = join(dir, 'r.yaml');
    writeFileSync(
      yaml,
      [
        'registry: consul://127.0.0.1:8500',
        'wait: 1s:4s',
        'timeout: 5s',
        'status: [passing, warning]',
        'domain: example.com',
        'templates:',
        '  - source: /t/n.hbs',
        '    destination: /etc/nginx/nginx.conf',
        '    command: nginx -s reload',
        "    check: 'nginx -t -c {{src}}'",
        '    verify: nginx:/run/nginx.pid',
        '    perms: "0644"',
        '    backup: true',
      ].join('\n'),
    );
    const json = join(dir, 'r.json');
    writeFileSync(
      json,
      JSON.stringify({
        registry: 'consul://127.0.0.1:8500',
        wait: '1s:4s',
        timeout: '5s',
        status: 'passing,warning',
        domain: 'example.com',
        templates: [{ source: '/t/n.hbs', destination: '/etc/nginx/nginx.conf', command: 'nginx -s reload', check: 'nginx -t -c {{src}}', verify: 'nginx:/run/nginx.pid', perms: 420, backup: true }],
      }),
    );
    const expected = {
      registry: 'consul://127.0.0.1:8500',
      wait: { minMs: 1000, maxMs: 4000 },
      timeoutMs: 5000,
      statuses: ['passing', 'warning'],
      domain: 'example.com',
      templates: [{ source: '/t/n.hbs', destination: '/etc/nginx/nginx.conf', command: 'nginx -s reload', check: 'nginx -t -c {{src}}', verify: { kind: 'nginx', pidFile: '/run/nginx.pid' }, perms: 0o644, backup: true }],
    };
    expect(loadRenderFile(yaml)).toEqual(expected);
    expect(loadRenderFile(json)).toEqual(expected);
  });

  it.each([
    [{ templates: [] }, 'f.yaml: templates: expected a non-empty list'],
    [{}, 'f.yaml: templates: expected a non-empty list'],
    [{ templates: [{ source: '/a' }] }, 'f.yaml: templates[0].destination: is required'],
    [{ templates: [{ source: '/a', destination: 5 }] }, 'f.yaml: templates[0].destination: expected a non-empty string'],
    [{ templates: [{ source: '/a', destination: '/b', reload: 'x' }] }, 'f.yaml: templates[0].reload: unknown key'],
    [{ templates: [{ source: '/a', destination: '/b', verify: 'nope' }] }, 'f.yaml: templates[0].verify: expected nginx:<pid-file>'],
    [{ templates: [{ source: '/a', destination: '/b', backup: 'yes' }] }, 'f.yaml: templates[0].backup: expected true or false'],
    [{ templates: [{ source: '/a', destination: '/b', perms: '7777' }] }, 'f.yaml: templates[0].perms:'],
    [{ templates: [{ source: '/a', destination: '/b' }], wait: '3s:1s' }, 'f.yaml: wait: max must not be shorter than min'],
    [{ templates: [{ source: '/a', destination: '/b' }], status: ['healthy'] }, 'f.yaml: status: "healthy" is not one of'],
    [{ templates: [{ source: '/a', destination: '/b' }], domain: 'Bad_Domain' }, 'f.yaml: domain:'],
    [{ templates: [{ source: '/a', destination: '/b' }], listen: ':80' }, 'f.yaml: listen: unknown key'],
    [['a'], 'f.yaml: expected a mapping'],
  ])('refuses %j', (doc, msg) => {
    expect(usageError(() => renderFileFrom('f.yaml', doc))).toContain(msg);
  });

  it('names the file for unreadable and unparsable files', () => {
    expect(usageError(() => loadRenderFile(join(dir, 'missing.yaml')))).toContain('missing.yaml: cannot read: ENOENT');
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'templates: [1,\nwait: x: y');
    expect(usageError(() => loadRenderFile(bad))).toMatch(/bad\.yaml: .*line 2/);
  });

  it('checks that templates exist and destinations have a folder', () => {
    const src = join(dir, 't.hbs');
    writeFileSync(src, 'x');
    expect(() => checkTemplateFiles([{ source: src, destination: join(dir, 'out'), verify: { kind: 'plain' }, backup: false }])).not.toThrow();
    expect(usageError(() => checkTemplateFiles([{ source: join(dir, 'nope.hbs'), destination: join(dir, 'out'), verify: { kind: 'plain' }, backup: false }]))).toContain('template file does not exist');
    expect(usageError(() => checkTemplateFiles([{ source: src, destination: join(dir, 'no/such/out'), verify: { kind: 'plain' }, backup: false }]))).toContain('destination folder');
    const t = { source: src, destination: join(dir, 'out'), verify: { kind: 'plain' as const }, backup: false };
    expect(usageError(() => checkTemplateFiles([t, t]))).toContain('two templates write the same destination');
  });
});
