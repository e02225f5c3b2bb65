// `harbormaster services <registry-uri> [--json]`: what the registry holds.
import type { ServiceInstance } from '../../model/service-instance.js';
import { redact } from '../../log/redact.js';
import { createBackend } from '../../registry/index.js';
import { UsageError } from '../../registry/types.js';
import { COMMON_OPTIONS, parse } from '../args.js';

export const SERVICES_HELP = `Usage: harbormaster services <registry-uri> [--json]

Lists what the registry holds: service, instance id, address:port, tags, status.

Options:
  --json        print a JSON array of ServiceInstance objects
  -h, --help    this help
`;

export async function servicesCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parse(argv, { ...COMMON_OPTIONS, json: { type: 'boolean' } });
  if (values.help) {
    out(SERVICES_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`services takes one registry URI, got ${positionals.length}`);
  const backend = createBackend(positionals[0], { ttl: 0, warn: (m) => process.stderr.write(`${redact(m)}\n`) });
  try {
    const list = await backend.list();
    out(values.json ? `${JSON.stringify(list, null, 2)}\n` : table(list));
  } finally {
    await backend.close();
  }
  return 0;
}

function table(list: ServiceInstance[]): string {
  const rows = [['SERVICE', 'ID', 'ADDRESS', 'TAGS', 'STATUS']];
  for (const s of list) rows.push([s.name, s.id, `${s.address}:${s.port}`, s.tags.join(',') || '-', s.status]);
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}
