// What an identity or project event must look like before it is appended. The command
// handler refuses anything else (INVALID_EVENT), so the log never holds a malformed event.
import { z } from 'zod';
import type { EventSchemas } from './handleCommand.ts';

const Uuid = z.uuid();
const Slug = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/);
const Role = z.enum(['admin', 'user']);
const ProjectRole = z.enum(['admin', 'operator', 'viewer']);
const Rate = z.number().int().min(1).max(100_000).nullable();
const Iso = z.iso.datetime({ offset: true });
export const USERNAME_PATTERN = /^[a-z0-9][a-z0-9._-]{1,62}$/i;
const Username = z.string().regex(USERNAME_PATTERN);
const Billing = z.object({
  company_name: z.string().min(1).max(200), company_address: z.string().min(1).max(500),
  tax_number_type: z.enum(['vat', 'gst', 'ein']), tax_number: z.string().min(1).max(64), country: z.string().length(2),
}).strict();

export const identityEventSchemas: EventSchemas = {
  UserRegistered: z.object({
    userId: Uuid, username: Username, email: z.email().nullable(), role: Role,
    passwordRef: z.string().min(1), rateLimitPerSecond: Rate, rateLimitBurst: Rate,
    via: z.enum(['bootstrap', 'admin', 'registration', 'cli']),
  }).strict(),
  UserUpdated: z.object({
    userId: Uuid, email: z.email().nullable().optional(), role: Role.optional(),
    rateLimitPerSecond: Rate.optional(), rateLimitBurst: Rate.optional(),
  }).strict(),
  UserPasswordChanged: z.object({ userId: Uuid, passwordRef: z.string().min(1), sessionVersion: z.number().int().min(1) }).strict(),
  UserDeactivated: z.object({ userId: Uuid, sessionVersion: z.number().int().min(1) }).strict(),
  UserReactivated: z.object({ userId: Uuid }).strict(),
  ApiTokenIssued: z.object({
    userId: Uuid, tokenId: Uuid, name: z.string().min(1).max(100), tokenHash: z.string().regex(/^[0-9a-f]{64}$/),
    prefix: z.string().max(16), scopes: z.array(z.string()).nullable(), project: Slug.nullable(), expiresAt: Iso.nullable(),
  }).strict(),
  ApiTokenRevoked: z.object({ userId: Uuid, tokenId: Uuid }).strict(),
  // On the `username-<lower-cased name>` stream (domain/usernames.ts), not on the user's.
  UsernameReserved: z.object({ username: Username, userId: Uuid, reservedAt: Iso }).strict(),
};

export const projectEventSchemas: EventSchemas = {
  ProjectCreated: z.object({ slug: Slug, displayName: z.string().min(1).max(200), billingAccount: Billing.nullable(), createdBy: Uuid.nullable() }).strict(),
  ProjectUpdated: z.object({ slug: Slug, displayName: z.string().min(1).max(200).optional(), billingAccount: Billing.nullable().optional() }).strict(),
  ProjectDeleted: z.object({ slug: Slug }).strict(),
  MemberSet: z.object({ slug: Slug, userId: Uuid, role: ProjectRole }).strict(),
  MemberRemoved: z.object({ slug: Slug, userId: Uuid }).strict(),
};
