// `npm run bench`: runs every benchmark against the real engines on this machine and writes
// bench/RESULTS.md. Pass names to run a subset: `npm run bench -- proxy render`.
import { writeFileSync, existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ALL = ['registration', 'reconcile', 'render', 'proxy', 'rollout', 'dns', 'scale'];
const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const names = wanted.length ? wanted : ALL;
for (const n of names) if (!ALL.includes(n)) throw new Error(`unknown benchmark "${n}" (${ALL.join(', ')})`);

const out = fileURLToPath(new URL('./RESULTS.md', import.meta.url));
// Keep the sections of benchmarks not run this time.
const previous = existsSync(out) ? readFileSync(out, 'utf8') : '';
const sections = new Map();
for (const part of previous.split(/^(?=## )/m)) {
  const m = /^## (.+)$/m.exec(part);
  if (m && part.startsWith('## ')) sections.set(m[1].trim(), part.trimEnd());
}

for (const name of names) {
  const file = new URL(`./${name}.mjs`, import.meta.url);
  if (!existsSync(file)) throw new Error(`bench/${name}.mjs is missing`);
  console.error(`bench: ${name} …`);
  const md = String(await (await import(file.href)).run()).trim();
  const heading = /^## (.+)$/m.exec(md)?.[1]?.trim() ?? name;
  sections.set(heading, md);
  console.log(md, '\n');
}

const body = [
  '# Benchmark results',
  '',
  'Produced by `npm run bench` (each section names its own command). These machines are shared',
  'and noisy: compare the ratios measured in the same run, not absolute numbers across runs.',
  '',
  ...[...sections.values()].map((s) => `${s}\n`),
].join('\n');
writeFileSync(out, body);
console.error(`bench: wrote ${out}`);
process.exit(0);
