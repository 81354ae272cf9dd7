// Name-based UUIDs (version 5 layout, SHA-1): the same name always gives the same id, so an
// append that expects no stream makes "create this once" safe to retry and to race.
import { createHash } from 'node:crypto';

export const nameUuid = (namespace: string, name: string): string => {
  const h = createHash('sha1').update(Buffer.from(namespace.replace(/-/g, ''), 'hex')).update(name).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
};
