// Alert channel endpoints (SPEC §5): webhooks that receive node/group (and later cert and
// job) alerts as HMAC-signed JSON. The signing secret is kept in the vault only: the
// event names it by reference, the create response shows it once, and deleting the
// channel deletes it.
import { randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';
import { DomainError } from '../domain/domainError.ts';
import { ALERT_EVENTS, alertChannelDecider, alertChannelStream } from '../domain/monitoring.ts';
import { DEFAULT_PROJECT } from '../domain/projects.ts';
import { requirePrincipal, requireProjectAccess, requireResourceAccess } from '../infra/auth/authenticate.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { Slug, Uuid } from '../infra/http/validate.ts';
import type { Vault } from '../infra/vault.ts';
import { commandContext, PlainText, settle, type CommandKit } from './commandRoute.ts';
import { requireProject } from './nodes.ts';
import { streamCommandRunner } from './handleCommand.ts';
import { monitoringEventSchemas } from './monitoringSchemas.ts';

type Routes = ReturnType<typeof bindRoutes>;

export type AlertChannelViews = {
  channel(id: string): Promise<{ view: Record<string, unknown>; project: string } | null>;
  projectExists(slug: string): Promise<boolean>;
  schemas: { AlertChannel: z.ZodType };
};

export type AlertChannelDeps = CommandKit & { vault: Pick<Vault, 'put' | 'deleteOwner'>; views: AlertChannelViews };

const CreateChannel = z.strictObject({
  name: PlainText(1, 100).optional(),
  project: Slug.default(DEFAULT_PROJECT),
  url: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).max(2048)
    // The URL is stored in the log; a password in it would be a secret in an event.
    .refine((u) => { const p = new URL(u); return !p.username && !p.password; }, 'must not carry credentials: the channel’s secret signs every alert'),
  events: z.array(z.enum(ALERT_EVENTS)).min(1).max(ALERT_EVENTS.length).refine((e) => new Set(e).size === e.length, 'events must not repeat'),
  secret: z.string().min(16, 'a signing secret has at least 16 characters').max(256).optional(),
});
const IdParams = z.object({ id: Uuid });

const channelOwner = (id: string) => `alert-channel:${id}`;
const channelNotFound = (id: string) => new DomainError('ALERT_CHANNEL_NOT_FOUND', `alert channel ${id} not found`);

export const alertChannelCommandRoutes = (routes: Routes, deps: AlertChannelDeps): void => {
  const run = streamCommandRunner(deps.store, monitoringEventSchemas, alertChannelDecider, alertChannelStream);

  routes.post({
    path: '/alert-channels', summary: 'Add a webhook alert channel', tags: ['alerts'], auth: true,
    description: 'Needs nodes:write in the project. Each alert is POSTed as JSON with `X-Opsledger-Signature: sha256=HMAC(secret, timestamp + "." + body)`, '
      + '`X-Opsledger-Timestamp`, `X-Opsledger-Event` and `X-Opsledger-Delivery` (the same id on every retry). '
      + 'Without `secret` one is generated; either way it is returned in this response only.',
    body: CreateChannel,
    responses: { 201: { body: deps.views.schemas.AlertChannel.and(z.object({ secret: z.string() })), headers: { Location: 'the new channel' } } },
  }, async ({ body }, req, res) => {
    requireProjectAccess(res, body.project, 'nodes:write');
    await requireProject(deps.views, body.project);
    const channelId = randomUUID();
    const secret = body.secret ?? randomBytes(32).toString('base64url');
    const secretRef = await deps.vault.put(channelOwner(channelId), 'webhook-secret', secret);
    let result;
    try {
      result = await run(channelId, { type: 'CreateAlertChannel', data: {
        channelId, project: body.project, name: body.name ?? new URL(body.url).host, url: body.url, events: body.events, secretRef,
      } }, commandContext(req, res, body.project));
    } catch (err) {
      await deps.vault.deleteOwner(channelOwner(channelId)).catch(() => undefined);
      throw err;
    }
    await settle(deps, res, [result]);
    const found = await deps.views.channel(channelId);
    if (!found) throw channelNotFound(channelId);
    res.setHeader('Location', `/api/v1/alert-channels/${channelId}`);
    res.status(201).json({ ...found.view, secret });
  });

  routes.delete({
    path: '/alert-channels/:id', summary: 'Delete an alert channel', tags: ['alerts'], auth: true,
    description: 'Its secret is deleted with it; alerts not yet delivered are dropped.',
    params: IdParams, responses: { 204: 'deleted', 404: 'no such channel (or not visible to you)' },
  }, async ({ params }, req, res) => {
    const principal = requirePrincipal(res);
    const found = await deps.views.channel(params.id);
    if (!found) throw channelNotFound(params.id);
    requireResourceAccess(principal, found.project, 'nodes:write', () => channelNotFound(params.id));
    const result = await run(params.id, { type: 'DeleteAlertChannel', data: { channelId: params.id } }, commandContext(req, res, found.project));
    await deps.vault.deleteOwner(channelOwner(params.id));
    await settle(deps, res, [result]);
    res.status(204).end();
  });
};
