// The topics a live client may subscribe to (SPEC §10) and the rooms a change goes to.
// Pure: the gateway uses it for `subscribe` and for routing, tests check it directly.

/** How an id in a `<singular>:<id>` topic must look. */
type IdShape = 'uuid' | 'slug';

type Collection = {
  /** The per-item topic prefix (`node` for `node:{id}`), or null when items have no topic. */
  singular: string | null;
  /** Shape of the item id in `<singular>:<id>`. */
  id: IdShape;
  /** May a client subscribe to the whole collection? (SPEC lists only `workflow-run:{id}`.) */
  subscribable: boolean;
};

/**
 * Change topic (what a projector emits) → its item topic. A change with topic `nodes` and
 * id X reaches the rooms `nodes` and `node:X`. Add a row when a module starts emitting.
 */
export const LIVE_COLLECTIONS: Readonly<Record<string, Collection>> = {
  nodes: { singular: 'node', id: 'uuid', subscribable: true },
  groups: { singular: 'group', id: 'uuid', subscribable: true },
  jobs: { singular: 'job', id: 'uuid', subscribable: true },
  proxies: { singular: 'proxy', id: 'slug', subscribable: true },
  stacks: { singular: 'stack', id: 'slug', subscribable: true },
  'workflow-runs': { singular: 'workflow-run', id: 'uuid', subscribable: false },
  users: { singular: 'user', id: 'uuid', subscribable: true },
  projects: { singular: 'project', id: 'slug', subscribable: true },
  // Stream ids are free-form (`user-<uuid>`, `project-<slug>`…): the collection only.
  streams: { singular: null, id: 'slug', subscribable: true },
};

const ID_PATTERN: Record<IdShape, RegExp> = {
  uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
  // Same rule as infra/http/validate.ts `Slug`.
  slug: /^[a-z0-9][a-z0-9-]{0,62}$/,
};

const BY_SINGULAR: ReadonlyMap<string, { collection: string; id: IdShape }> = new Map(
  Object.entries(LIVE_COLLECTIONS).flatMap(([collection, c]) => (c.singular ? [[c.singular, { collection, id: c.id }] as const] : [])),
);

const MAX_TOPIC_LENGTH = 128;

export type ParsedTopic =
  | { ok: true; topic: string; collection: string; id: string | null }
  | { ok: false; error: string };

/**
 * Validates a client's topic: a subscribable collection (`nodes`) or an item topic with a
 * well-formed id (`node:<uuid>`, `proxy:<slug>`). Ids are normalised to lower case, as the
 * API does, so `node:ABC…` and `node:abc…` are one room.
 */
export const parseTopic = (topic: unknown): ParsedTopic => {
  if (typeof topic !== 'string' || topic.length === 0) return { ok: false, error: 'topic must be a non-empty string' };
  if (topic.length > MAX_TOPIC_LENGTH) return { ok: false, error: 'topic is too long' };
  const colon = topic.indexOf(':');
  if (colon < 0) {
    const c = LIVE_COLLECTIONS[topic];
    if (!Object.hasOwn(LIVE_COLLECTIONS, topic) || !c?.subscribable) return { ok: false, error: `unknown topic: ${topic}` };
    return { ok: true, topic, collection: topic, id: null };
  }
  const prefix = topic.slice(0, colon);
  const item = BY_SINGULAR.get(prefix);
  if (!item) return { ok: false, error: `unknown topic: ${prefix}:…` };
  const id = topic.slice(colon + 1).toLowerCase();
  if (!ID_PATTERN[item.id].test(id)) return { ok: false, error: `malformed ${prefix} id: expected a ${item.id}` };
  return { ok: true, topic: `${prefix}:${id}`, collection: item.collection, id };
};

/** The rooms a change goes to: its topic, and its item's topic when the collection has one. */
export const roomsOf = (topic: string, id: string): string[] => {
  const c = Object.hasOwn(LIVE_COLLECTIONS, topic) ? LIVE_COLLECTIONS[topic] : undefined;
  return c?.singular ? [topic, `${c.singular}:${id.toLowerCase()}`] : [topic];
};
