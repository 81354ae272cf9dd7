// Old schema versions are read as new: each upcaster lifts one event type from one
// schema version to the next, and readers apply the chain until none matches. Modules
// register theirs at composition; the stored log is never rewritten.
import type { RecordedEvent } from './eventStore.ts';

export type Upcaster = {
  type: string;
  fromVersion: number;
  upcast(data: Record<string, unknown>, event: RecordedEvent): { type?: string; data: Record<string, unknown> };
};

export const createUpcast = (upcasters: readonly Upcaster[]) => {
  if (upcasters.length === 0) return (e: RecordedEvent): RecordedEvent => e;
  const byKey = new Map(upcasters.map((u) => [`${u.type}@${u.fromVersion}`, u]));
  return (event: RecordedEvent): RecordedEvent => {
    let current = event;
    for (let u = byKey.get(`${current.type}@${current.metadata.schema_version}`); u; u = byKey.get(`${current.type}@${current.metadata.schema_version}`)) {
      const next = u.upcast(current.data, current);
      current = {
        ...current,
        type: next.type ?? current.type,
        data: next.data,
        metadata: { ...current.metadata, schema_version: current.metadata.schema_version + 1 },
      };
    }
    return current;
  };
};
