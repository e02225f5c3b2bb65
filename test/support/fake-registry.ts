// A Docker registry on loopback that serves one repository for pulls (the registry HTTP API v2:
// manifests and blobs, no push), built from a local image with `docker save`: two images (its layers, its config
// with one env entry more, different in each), and one tag that can be moved from the first to
// the second, as a registry does when a new build is pushed under the same tag. dockerd pulls from 127.0.0.0/8 over plain HTTP.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

const digest = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface FakeImage {
  manifest: Buffer;
  digest: string;
  /** The image id Docker gives it (the config's digest). */
  id: string;
}

export class FakeRegistry {
  private readonly blobs = new Map<string, Buffer>();
  private readonly images: FakeImage[] = [];
  private current = 0;
  private server?: http.Server;
  /** Manifest requests answered (a pull, or a check of the tag). */
  manifestRequests = 0;

  private constructor(readonly repo: string) {}

  /** Two images from `localImage` (its layers; its config with `<env>=1`, then `<env>=2`, added): neither is an image the host has. */
  static async fromImage(localImage: string, repo: string, env: string): Promise<FakeRegistry> {
    const dir = mkdtempSync(join(tmpdir(), 'hm-fake-registry-'));
    try {
      await exec('docker', ['save', localImage, '-o', join(dir, 'image.tar')]);
      await exec('tar', ['-xf', join(dir, 'image.tar'), '-C', dir]);
      const [m] = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { Config: string; Layers: string[] }[];
      const r = new FakeRegistry(repo);
      const layers = m.Layers.map((l) => readFileSync(join(dir, l)));
      const config = JSON.parse(readFileSync(join(dir, m.Config), 'utf8')) as { config: { Env?: string[] } };
      const base = config.config.Env ?? [];
      for (const v of [1, 2]) {
        config.config.Env = [...base, `${env}=${v}`];
        r.add(Buffer.from(JSON.stringify(config)), layers);
      }
      return r;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  private add(config: Buffer, layers: Buffer[]): void {
    this.blobs.set(digest(config), config);
    for (const l of layers) this.blobs.set(digest(l), l);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MANIFEST,
        config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: digest(config) },
        // Served as they are (uncompressed): Docker looks at the bytes, not the media type, to decompress.
        layers: layers.map((l) => ({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: l.length, digest: digest(l) })),
      }),
    );
    this.images.push({ manifest, digest: digest(manifest), id: digest(config) });
  }

  /** The image the tag names now. */
  get tagged(): FakeImage {
    return this.images[this.current];
  }

  /** Moves the tag to image `n` (0 or 1). */
  moveTag(n: number): void {
    this.current = n;
  }

  image(n: number): FakeImage {
    return this.images[n];
  }

  async start(port: number): Promise<string> {
    this.server = http.createServer((req, res) => {
      const url = req.url ?? '';
      const send = (status: number, body: Buffer, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-length': String(body.length), ...headers });
        res.end(req.method === 'HEAD' ? undefined : body);
      };
      if (url === '/v2/' || url === '/v2') return send(200, Buffer.from('{}'), { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
      const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/?]+)$/.exec(url);
      if (!m || m[1] !== this.repo) return send(404, Buffer.from('{"errors":[{"code":"NAME_UNKNOWN"}]}'), { 'content-type': 'application/json' });
      if (m[2] === 'manifests') {
        this.manifestRequests++;
        const img = m[3].startsWith('sha256:') ? this.images.find((i) => i.digest === m[3]) : m[3] === '1' ? this.tagged : undefined;
        if (!img) return send(404, Buffer.from('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'), { 'content-type': 'application/json' });
        return send(200, img.manifest, { 'content-type': MANIFEST, 'docker-content-digest': img.digest });
      }
      const blob = this.blobs.get(m[3]);
      if (!blob) return send(404, Buffer.from('{"errors":[{"code":"BLOB_UNKNOWN"}]}'), { 'content-type': 'application/json' });
      return send(200, blob, { 'content-type': 'application/octet-stream', 'docker-content-digest': m[3] });
    });
    await new Promise<void>((r) => this.server!.listen(port, '127.0.0.1', r));
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}/${this.repo}:1`;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise((r) => s.close(r));
  }
}
