// What the rollout reads and asks of the write side: the instances the registry holds (to know
// when a replacement is registered and passing, and when an old one is gone), and the sidecar's
// withdrawal API (to take an old container out of rotation while it still runs).
import { request } from 'undici';
import type { ServiceInstance } from '../model/service-instance.js';
import { createBackend } from '../registry/index.js';
import type { RegistryBackend } from '../registry/types.js';

export interface RegistryView {
  /** Every instance the registry holds now (all statuses). */
  instances(): Promise<ServiceInstance[]>;
  close(): Promise<void>;
}

/** A real registry (Consul, etcd) read directly; memory:// is the sidecar's own, read through its API. */
export function registryView(uri: string, api: URL, token?: string): RegistryView {
  if (uri.startsWith('memory:')) return new ApiCatalogView(api, token);
  const backend: RegistryBackend = createBackend(uri, { ttl: 0, warn: () => undefined });
  return { instances: () => backend.list(), close: () => backend.close() };
}

class ApiCatalogView implements RegistryView {
  constructor(
    private readonly api: URL,
    private readonly token?: string,
  ) {}

  async instances(): Promise<ServiceInstance[]> {
    const body = (await callApi(this.api, this.token, 'GET', '/v1/services')) as { complete?: boolean; services?: { instances?: ServiceInstance[] }[] };
    if (!body || !Array.isArray(body.services)) throw new Error(`status API ${this.api.origin}: /v1/services answered without a services list`);
    if (body.complete === false) throw new Error(`status API ${this.api.origin}: the catalog is not complete yet`);
    return body.services.flatMap((s) => (Array.isArray(s.instances) ? s.instances : []));
  }

  async close(): Promise<void> {}
}

export interface Withdrawal {
  container: string;
  name: string;
  withdrawn: string[];
  until: string;
  confirmed: boolean;
}

/** The sidecar's withdrawal API (POST/DELETE /v1/withdraw). */
export class Sidecar {
  constructor(
    readonly api: URL,
    private readonly token?: string,
  ) {}

  async withdraw(container: string, forMs: number): Promise<Withdrawal> {
    return (await callApi(this.api, this.token, 'POST', `/v1/withdraw?container=${encodeURIComponent(container)}&for=${Math.ceil(forMs / 1000)}s`)) as Withdrawal;
  }

  /** Back in rotation at once; a container the sidecar no longer knows is fine. */
  async readmit(container: string): Promise<void> {
    await callApi(this.api, this.token, 'DELETE', `/v1/withdraw?container=${encodeURIComponent(container)}`, [404]);
  }

  async reachable(): Promise<string | undefined> {
    try {
      await callApi(this.api, this.token, 'GET', '/v1/withdraw');
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  }
}

async function callApi(api: URL, token: string | undefined, method: string, path: string, okStatuses: number[] = []): Promise<unknown> {
  const url = new URL(path, api);
  let res;
  try {
    res = await request(url, { method, headers: token ? { authorization: `Bearer ${token}` } : {}, headersTimeout: 10_000, bodyTimeout: 10_000 });
  } catch (err) {
    throw new Error(`status API ${api.origin}: ${method} ${url.pathname}: ${(err as Error).message}`);
  }
  const text = await res.body.text();
  if (res.statusCode >= 300 && !okStatuses.includes(res.statusCode)) {
    throw new Error(`status API ${api.origin}: ${method} ${url.pathname} answered ${res.statusCode}: ${text.split('\n')[0].slice(0, 200)}`);
  }
  if (res.statusCode >= 300) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new Error(`status API ${api.origin}: ${method} ${url.pathname}: the answer is not JSON`);
  }
}
