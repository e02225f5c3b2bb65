// Routing meta (http_host, http_path, weight) reaches proxy configs and the built-in router:
// it is validated where it is written (labels) and again where it is read (registry records).

const HOST_LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
const HOST = new RegExp(`^(?:\\*\\.)?${HOST_LABEL}(?:\\.${HOST_LABEL})*$`);
/** URL path characters that are safe unquoted in nginx and HAProxy configs. */
const PATH = /^\/[A-Za-z0-9._~:@+=,/-]*$/;

export function splitHosts(value: string): string[] {
  return value
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean);
}

export function checkHttpHost(value: string): string | undefined {
  const hosts = splitHosts(value);
  if (hosts.length === 0) return 'is empty';
  for (const h of hosts) if (h.length > 253 || !HOST.test(h)) return `"${h.slice(0, 60)}" is not a host name`;
  return undefined;
}

export function checkHttpPath(value: string): string | undefined {
  if (value.length > 256 || !PATH.test(value)) return `"${value.slice(0, 60)}" is not a URL path (/, then A-Z a-z 0-9 . _ ~ : @ + = , / -)`;
  if (value.includes('//') || /(^|\/)\.\.?(\/|$)/.test(value)) return `"${value.slice(0, 60)}" is not a normalized URL path`;
  return undefined;
}

export function checkWeight(value: string): string | undefined {
  if (!/^\d{1,4}$/.test(value) || Number(value) > 1000) return `"${value.slice(0, 20)}" is not a weight (0-1000)`;
  return undefined;
}

/** Validate a meta key that has routing meaning; other keys pass. */
export function checkRouteMeta(key: string, value: string): string | undefined {
  switch (key) {
    case 'http_host':
      return checkHttpHost(value);
    case 'http_path':
      return checkHttpPath(value);
    case 'weight':
      return checkWeight(value);
    default:
      return undefined;
  }
}
