// What one render run works from: the template data of a catalog, plus the means to rebuild it
// without some instances (or with one changed), so that an instance a proxy's check rejects can
// be found and left out while every other instance keeps updating.
import type { Catalog } from '../catalog/catalog.js';
import type { ServiceInstance } from '../model/service-instance.js';
import { type TemplateData, templateData, type TemplateDataOptions } from './template-data.js';

export interface InstanceRef {
  /** Unique within one input. */
  readonly key: string;
  readonly instance: Readonly<ServiceInstance>;
  /** Equal for an equal record in a later run (its health status aside: a flapping record is the same record). */
  readonly fingerprint: string;
}

export class CatalogInput {
  readonly data: TemplateData;
  readonly instances: readonly InstanceRef[];

  constructor(
    private readonly catalog: Catalog,
    private readonly opts: TemplateDataOptions,
  ) {
    this.data = templateData(catalog, opts);
    const refs: InstanceRef[] = [];
    catalog.services.forEach((s, si) =>
      s.instances.forEach((i, ii) => refs.push({ key: `${si}.${ii}`, instance: i, fingerprint: JSON.stringify([i.name, i.id, i.address, i.port, i.protocol, i.tags, i.meta]) })),
    );
    this.instances = refs;
  }

  /** The template data without the instances in `drop`, and with those in `replace` changed. */
  variant(drop: ReadonlySet<string>, replace?: ReadonlyMap<string, Readonly<ServiceInstance>>): TemplateData {
    const services = this.catalog.services.map((s, si) => ({
      ...s,
      instances: s.instances.flatMap((i, ii) => {
        const key = `${si}.${ii}`;
        return drop.has(key) ? [] : [replace?.get(key) ?? i];
      }),
    }));
    return templateData({ services, fingerprint: '' }, this.opts);
  }
}
