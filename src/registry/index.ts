// One factory from a registry URI to its backend; adding an engine is one case here.
import { ConsulBackend } from './consul-backend.js';
import { EtcdBackend } from './etcd-backend.js';
import { Etcd2Backend } from './etcd2-backend.js';
import { MemoryBackend, memoryStore } from './memory-backend.js';
import type { BackendOptions, RegistryBackend } from './types.js';
import { parseRegistryUri } from './uri.js';

export function createBackend(uri: string, opts: BackendOptions): RegistryBackend {
  const t = parseRegistryUri(uri);
  switch (t.kind) {
    case 'consul':
      return new ConsulBackend(t, opts);
    case 'etcd':
      return new EtcdBackend(t, opts);
    case 'etcd2':
      return new Etcd2Backend(t, opts);
    case 'memory':
      return new MemoryBackend(memoryStore(t.name), t.name, opts);
  }
}

export type { RegistryBackend } from './types.js';
