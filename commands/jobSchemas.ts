// What a jobs event must look like before it is appended (systems, jobs, templates).
import { z } from 'zod';
import type { EventSchemas } from './handleCommand.ts';
import { Labels } from './monitoringSchemas.ts';

const Uuid = z.uuid();
const Slug = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/);
const Iso = z.iso.datetime({ offset: true });
const Name = z.string().min(1).max(100);
// RFC 1123 host names or IP literals (checked at the edge; here only their shape).
const Hostname = z.string().min(1).max(253).regex(/^[A-Za-z0-9.:%-]+$/);
const Username = z.string().regex(/^[A-Za-z0-9._][A-Za-z0-9._-]{0,31}\$?$/);
const Output = z.object({ bytes: z.number().int().min(0), truncated: z.boolean() }).strict();
const ParamValue = z.union([z.string().max(4096), z.number(), z.boolean()]);
const Parameter = z.object({
  name: z.string().regex(/^[a-z][a-z0-9_]{0,62}$/), type: z.enum(['string', 'integer', 'boolean', 'enum']), required: z.boolean(),
  default: ParamValue.nullable(), values: z.array(z.string().max(200)).nullable(), description: z.string().max(500).nullable(),
}).strict();
const Targets = z.union([z.object({ systemIds: z.array(Uuid).min(1).max(1000) }).strict(), z.object({ labels: Labels }).strict()]);
const Fingerprint = z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/);

const SystemFields = {
  name: Name, hostname: Hostname, port: z.number().int().min(1).max(65535), systemType: z.enum(['linux', 'windows']),
  username: Username, authKind: z.enum(['password', 'private_key']), credentialRef: Uuid, description: z.string().max(1000).nullable(),
  labels: Labels, isActive: z.boolean(),
};
const TemplateFields = {
  name: Name, command: z.string().min(1).max(10_000), parameters: z.array(Parameter).max(50), targets: Targets,
  cron: z.string().max(200).nullable(), timezone: z.string().min(1).max(64), overlap: z.enum(['allow', 'skip', 'queue']),
  timeoutSeconds: z.number().int().min(1).max(86_400), maxParallel: z.number().int().min(1).max(1000).nullable(),
};
const optional = <T extends Record<string, z.ZodType>>(fields: T) =>
  Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, v.optional()])) as { [K in keyof T]: z.ZodOptional<T[K]> };

export const jobEventSchemas: EventSchemas = {
  SystemRegistered: z.object({ systemId: Uuid, project: Slug, ...SystemFields }).strict(),
  SystemUpdated: z.object({ systemId: Uuid, ...optional(SystemFields) }).strict(),
  SystemDeleted: z.object({ systemId: Uuid, project: Slug, credentialRef: Uuid }).strict(),
  HostKeyPinned: z.object({ systemId: Uuid, fingerprint: Fingerprint }).strict(),
  HostKeyCleared: z.object({ systemId: Uuid, previous: Fingerprint }).strict(),
  SystemChecked: z.object({
    systemId: Uuid, healthy: z.boolean(), checkedAt: Iso, responseTimeMs: z.number().min(0).nullable(), error: z.string().max(1000).nullable(),
  }).strict(),
  JobCreated: z.object({
    jobId: Uuid, name: Name, command: z.string().min(1).max(100_000), project: Slug,
    targets: z.array(z.object({ executionId: Uuid, systemId: Uuid, systemName: Name }).strict()).min(1).max(1000),
    scheduleAt: Iso.nullable(), timeoutSeconds: z.number().int().min(1).max(86_400), maxParallel: z.number().int().min(1).max(1000).nullable(),
    createdBy: Uuid.nullable(), templateId: Uuid.nullable(), params: z.record(z.string(), ParamValue).nullable(), queuedBehind: Uuid.nullable(),
  }).strict(),
  ExecutionStarted: z.object({ jobId: Uuid, executionId: Uuid, startedAt: Iso, runner: z.string().min(1).max(200) }).strict(),
  ExecutionFinished: z.object({
    jobId: Uuid, executionId: Uuid, status: z.enum(['completed', 'failed', 'timeout', 'cancelled', 'interrupted']),
    exitCode: z.number().int().nullable(), errorMessage: z.string().max(2000).nullable(), finishedAt: Iso,
    durationSeconds: z.number().min(0).nullable(), stdout: Output, stderr: Output,
  }).strict(),
  JobCancelled: z.object({ jobId: Uuid, at: Iso }).strict(),
  TemplateCreated: z.object({ templateId: Uuid, project: Slug, ...TemplateFields }).strict(),
  TemplateUpdated: z.object({ templateId: Uuid, ...optional(TemplateFields) }).strict(),
  TemplateDeleted: z.object({ templateId: Uuid, project: Slug }).strict(),
  TemplateRunSkipped: z.object({ templateId: Uuid, dueAt: Iso, reason: z.string().min(1).max(500) }).strict(),
};
