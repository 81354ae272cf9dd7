// What a monitoring event must look like before it is appended (the command handler and
// the snapshot path refuse anything else), and the request pieces shared by the routes.
import { isIP } from 'node:net';
import { z } from 'zod';
import { ALERT_EVENTS } from '../domain/monitoring.ts';
import type { EventSchemas } from './handleCommand.ts';

const Uuid = z.uuid();
const Slug = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/);
const Iso = z.iso.datetime({ offset: true });

/** Node names: host-name-like, so that they can be shown, filtered on and used as file names. */
export const NODE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
export const NodeName = z.string().regex(NODE_NAME_PATTERN, 'must be 1–63 letters, digits, dots, dashes or underscores, starting with a letter or digit');

// RFC 1123 host names (letters, digits, dashes; dot-separated labels).
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
export const IpAddress = z.string().refine((s) => isIP(s) !== 0, 'must be an IPv4 or IPv6 address');
export const Address = z.string().refine((s) => isIP(s) !== 0 || HOST_NAME.test(s), 'must be an IP address or a host name');

const LABEL_KEY = /^[a-z0-9][a-z0-9._/-]{0,62}$/;
export const Labels = z.record(z.string().regex(LABEL_KEY, 'label names are 1–63 lowercase letters, digits, dots, dashes, underscores or slashes'),
  z.string().min(0).max(200).refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'must not contain control characters'))
  .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');

export const Pubkey = z.string().min(1).max(4096).refine((s) => !/[\u0000-\u0008\u000b-\u001f\u007f]/.test(s), 'must not contain control characters');
export const METRIC_NAME = /^[A-Za-z0-9_.:-]{1,100}$/;
export const Metrics = z.record(z.string().regex(METRIC_NAME, 'metric names are 1–100 letters, digits or _.:-'),
  z.number({ error: 'must be a number' }).refine(Number.isFinite, 'must be a finite number'))
  .refine((m) => Object.keys(m).length <= 50, 'at most 50 metrics');

const HttpUrl = z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).max(2048);

const CheckEvent = z.object({
  type: z.enum(['http', 'tcp', 'push']),
  url: HttpUrl.nullable(),
  port: z.number().int().min(1).max(65535).nullable(),
  expectStatus: z.number().int().min(100).max(599).nullable(),
  timeoutMs: z.number().int().min(100).max(60_000),
  intervalS: z.number().int().min(1).max(86_400).nullable(),
  retries: z.number().int().min(0).max(10),
}).strict();

const NodeFields = {
  name: NodeName, project: Slug, address: Address, pubkey: Pubkey.nullable(), labels: Labels, check: CheckEvent, active: z.boolean(),
};
const AlertEvent = z.enum(ALERT_EVENTS);
const Selector = z.union([z.object({ labels: Labels }).strict(), z.object({ nodeIds: z.array(Uuid).min(1).max(1000) }).strict()]);

export const monitoringEventSchemas: EventSchemas = {
  NodeRegistered: z.object({ nodeId: Uuid, ...NodeFields }).strict(),
  NodeUpdated: z.object({
    nodeId: Uuid, address: Address.optional(), pubkey: Pubkey.nullable().optional(), labels: Labels.optional(),
    check: CheckEvent.optional(), active: z.boolean().optional(),
  }).strict(),
  NodeDecommissioned: z.object({ nodeId: Uuid, name: NodeName, project: Slug }).strict(),
  SnapshotRecorded: z.object({
    nodeId: Uuid, status: z.enum(['up', 'down']), latencyMs: z.number().min(0).max(3_600_000).nullable(),
    version: z.string().max(100).nullable(), metrics: Metrics.nullable(), observedAt: Iso,
    source: z.enum(['push', 'poll', 'monitor']), error: z.string().max(500).nullable(),
  }).strict(),
  GroupCreated: z.object({ groupId: Uuid, name: z.string().min(1).max(100), project: Slug, minOnline: z.number().int().min(1).max(100_000), selector: Selector }).strict(),
  GroupUpdated: z.object({
    groupId: Uuid, name: z.string().min(1).max(100).optional(), minOnline: z.number().int().min(1).max(100_000).optional(), selector: Selector.optional(),
  }).strict(),
  GroupDeleted: z.object({ groupId: Uuid, project: Slug }).strict(),
  AlertChannelCreated: z.object({
    channelId: Uuid, project: Slug, name: z.string().min(1).max(100), url: HttpUrl, events: z.array(AlertEvent).min(1), secretRef: Uuid,
  }).strict(),
  AlertChannelDeleted: z.object({ channelId: Uuid, project: Slug, secretRef: Uuid }).strict(),
};
