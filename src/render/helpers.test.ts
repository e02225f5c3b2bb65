import { describe, expect, it } from 'vitest';
import { envCidrs, haproxyFmt, haproxyQuote, networkOf, nginxQuote } from './helpers.js';
import { compileTemplate, templateErrorLine } from './template-file.js';

const render = (text: string, data: unknown = {}) => compileTemplate('t.hbs', text).render(data);

const instances = [
  { id: 'b', address: '10.0.0.2', port: 81, protocol: 'tcp', tags: ['blue', 'v2'], meta: { zone: 'b', weight: '5' }, status: 'passing' },
  { id: 'a', address: '10.0.0.1', port: 80, protocol: 'tcp', tags: ['green'], meta: { zone: 'a' }, status: 'warning' },
  { id: 'c', address: '::1', port: 9, protocol: 'udp', tags: ['blue'], meta: { zone: 'a' }, status: 'passing' },
];

describe('helpers', () => {
  it('byTag keeps the items carrying a tag', () => {
    expect(render('{{#each (byTag list "blue")}}{{id}} {{/each}}', { list: instances })).toBe('b c ');
    expect(render('{{#each (byTag list "none")}}x{{else}}none{{/each}}', { list: instances })).toBe('none');
  });

  it('groupBy groups by a (dotted) path, keys sorted', () => {
    expect(render('{{#each (groupBy list "meta.zone")}}{{key}}:{{#each items}}{{id}}{{/each}} {{/each}}', { list: instances })).toBe('a:ac b:b ');
  });

  it('where filters by equality, or by presence without a value', () => {
    expect(render('{{#each (where list "protocol" "tcp")}}{{id}}{{/each}}', { list: instances })).toBe('ba');
    expect(render('{{#each (where list "port" 80)}}{{id}}{{/each}}', { list: instances })).toBe('a');
    expect(render('{{#each (where list "meta.weight")}}{{id}}{{/each}}', { list: instances })).toBe('b');
  });

  it('sortBy sorts numbers numerically and text by code point, without touching the input', () => {
    const list = [{ n: 10, s: 'b' }, { n: 9, s: 'B' }, { n: 100, s: 'a' }];
    expect(render('{{#each (sortBy list "n")}}{{n}},{{/each}}', { list })).toBe('9,10,100,');
    expect(render('{{#each (sortBy list "s")}}{{s}},{{/each}}', { list })).toBe('B,a,b,');
    expect(list[0].n).toBe(10);
  });

  it('join, default, json, len, clamp, hostPort', () => {
    expect(render('{{join tags}}|{{join tags " "}}', { tags: ['a', 'b'] })).toBe('a,b|a b');
    expect(render('{{default x "80"}}|{{default y "80"}}|{{default z "80"}}', { x: '', y: '8080' })).toBe('80|8080|80');
    expect(render('{{json m}}', { m: { a: '"<x>"' } })).toBe('{"a":"\\"<x>\\""}');
    expect(render('{{len l}} {{len o}} {{len s}}', { l: [1, 2], o: { a: 1 }, s: 'abc' })).toBe('2 1 3');
    expect(render('{{clamp "500" 0 256}} {{clamp "0" 1 1000}} {{clamp "x" 1 9}}')).toBe('256 1 1');
    expect(render('{{hostPort "10.0.0.1" 80}} {{hostPort "::1" 80}} {{hostPort "db.local" 5432}}')).toBe('10.0.0.1:80 [::1]:80 db.local:5432');
  });

  it('eq ne lt gt and or not', () => {
    const t = '{{#if (and (eq a 1) (ne a 2) (lt a 2) (gt a 0))}}y{{else}}n{{/if}}{{#if (or (not a) b)}}y{{else}}n{{/if}}{{#if (not list)}}empty{{/if}}';
    expect(render(t, { a: 1, b: 0, list: [] })).toBe('ynempty');
  });

  it('does not HTML-escape: quoting helpers are the escaping policy', () => {
    expect(render('{{v}}', { v: '<a href="x">&' })).toBe('<a href="x">&');
  });

  it('does not reach prototypes through paths', () => {
    expect(render('{{#each (where list "constructor.name" "Object")}}x{{else}}none{{/each}}', { list: [{}] })).toBe('none');
  });
});

describe('quoting', () => {
  it('nginxQuote makes one double-quoted token', () => {
    expect(nginxQuote('plain')).toBe('"plain"');
    expect(nginxQuote('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(nginxQuote('x; } # {')).toBe('"x; } # {"');
    // nginx has no escape for $ (variables) nor for control characters
    expect(nginxQuote('${x} $host')).toBe('"%24{x} %24host"');
    expect(nginxQuote('a\nb\r\0')).toBe('"a%0Ab%0D%00"');
    expect(nginxQuote(undefined)).toBe('""');
    expect(nginxQuote(42)).toBe('"42"');
  });

  it('haproxyFmt doubles % so a log-format argument cannot expand %[...]', () => {
    expect(haproxyFmt('%[env(SECRET)]')).toBe("'%%[env(SECRET)]'");
    expect(haproxyFmt("it's 100%\n")).toBe("'it'\\''s 100%%%%0A'");
  });

  it("haproxyQuote makes one single-quoted word, closing and reopening around '", () => {
    expect(haproxyQuote('plain')).toBe("'plain'");
    expect(haproxyQuote("it's")).toBe("'it'\\''s'");
    expect(haproxyQuote('${HOME} "x" # \\')).toBe(`'\${HOME} "x" # \\'`);
    expect(haproxyQuote('a\nb')).toBe("'a%0Ab'");
  });
});

describe('chunks and range', () => {
  it('cut a list into lines of at most n, and count from a up to b', () => {
    expect(render('{{#each (chunks xs 2)}}[{{join this " "}}]{{/each}}', { xs: [1, 2, 3, 4, 5] })).toBe('[1 2][3 4][5]');
    expect(render('{{#each (chunks xs 50)}}x{{/each}}', { xs: [] })).toBe('');
    expect(render('{{#each (range 1 4)}}{{this}},{{/each}}', {})).toBe('1,2,3,');
    expect(render('{{#each (range 1 1)}}{{this}}{{/each}}', {})).toBe('');
  });
});

describe('envCidrs', () => {
  const tpl = '{{#each (envCidrs "HM_TRUSTED_PROXIES")}}[{{this}}]{{else}}none{{/each}}';

  it('reads the variable from the root env, as networks, without duplicates; unset or blank is none', () => {
    expect(render(tpl, { env: { HM_TRUSTED_PROXIES: '10.1.2.3/8, 10.0.0.0/8,::1,192.168.1.7' } })).toBe('[10.0.0.0/8][0:0:0:0:0:0:0:1/128][192.168.1.7/32]');
    expect(render(`{{#each x}}${tpl}{{/each}}`, { x: [1], env: { HM_TRUSTED_PROXIES: '127.0.0.1' } })).toBe('[127.0.0.1/32]');
    expect(render(tpl, { env: {} })).toBe('none');
    expect(render(tpl, { env: { HM_TRUSTED_PROXIES: '  ' } })).toBe('none');
    expect(render(tpl, {})).toBe('none');
  });

  it('fails the render naming the variable and the entry, never writing it', () => {
    const t = compileTemplate('t.hbs', `a\n${tpl}`);
    expect(() => t.render({ env: { HM_TRUSTED_PROXIES: '10.0.0.0/8;include /etc/passwd' } })).toThrow('t.hbs:2: HM_TRUSTED_PROXIES: "10.0.0.0/8;include /etc/passwd": the prefix length must be 0 to 32');
    expect(() => t.render({ env: { HM_TRUSTED_PROXIES: 'proxy.example' } })).toThrow('t.hbs:2: HM_TRUSTED_PROXIES: "proxy.example" is not an IPv4/IPv6 address or CIDR');
    expect(() => envCidrs({ X: ',,' }, 'X')).toThrow('X: expected a comma list of addresses or CIDRs');
  });

  it('networkOf clears the host bits of both families', () => {
    expect(networkOf('10.1.2.3/8')).toBe('10.0.0.0/8');
    expect(networkOf('10.1.2.3/32')).toBe('10.1.2.3/32');
    expect(networkOf('0.0.0.0/0')).toBe('0.0.0.0/0');
    expect(networkOf('fd00::1/8')).toBe('fd00:0:0:0:0:0:0:0/8');
    expect(networkOf('1:2:3:4:5:6:7:8/64')).toBe('1:2:3:4:0:0:0:0/64');
    expect(networkOf('::ffff:1.2.3.4/120')).toBe('0:0:0:0:0:ffff:102:300/120');
    expect(networkOf('::/0')).toBe('0:0:0:0:0:0:0:0/0');
  });
});

describe('template errors', () => {
  it('report parse errors with file and line', () => {
    expect(() => compileTemplate('/etc/t.hbs', 'a\nb\n{{foo\n')).toThrow(/^\/etc\/t\.hbs:3: parse error/);
    expect(() => compileTemplate('t.hbs', 'a\n\n{{#if x}}\n{{/each}}\n')).toThrow(/^t\.hbs:3: if doesn't match each$/);
  });

  it('report unknown helpers and helper failures at render time with their line', () => {
    const t = compileTemplate('t.hbs', 'one\ntwo\n  {{nope x}}\n');
    expect(() => t.render({ x: 1 })).toThrow('t.hbs:3: unknown helper "nope"');
    const u = compileTemplate('u.hbs', '\n{{#each (sortBy x "a")}}{{/each}}');
    expect(() => u.render({ x: 'not a list' })).toThrow('u.hbs:2: sortBy: expected a list, got string');
  });

  it('templateErrorLine without a line', () => {
    expect(templateErrorLine('f', new Error('boom'))).toBe('f: boom');
  });
});

describe('envSize', () => {
  it('reads sizes as nginx writes them, the default when unset, and names the variable otherwise', async () => {
    const { envSize } = await import('./helpers.js');
    expect(envSize(undefined, 'HM_MAX_BODY_SIZE', '1g')).toBe(1024 ** 3);
    expect(envSize({ HM_MAX_BODY_SIZE: '512m' }, 'HM_MAX_BODY_SIZE', '1g')).toBe(512 * 1024 ** 2);
    expect(envSize({ HM_MAX_BODY_SIZE: '0' }, 'HM_MAX_BODY_SIZE', '1g')).toBe(0);
    expect(envSize({ HM_MAX_BODY_SIZE: ' ' }, 'HM_MAX_BODY_SIZE', '1g')).toBe(1024 ** 3);
    for (const bad of ['1.5g', '-1', '1t', '1g;', '1g\n  deny all', '99999999999999999g']) {
      expect(() => envSize({ HM_MAX_BODY_SIZE: bad }, 'HM_MAX_BODY_SIZE', '1g')).toThrow(/^HM_MAX_BODY_SIZE=.*expected a size/);
    }
  });
});
