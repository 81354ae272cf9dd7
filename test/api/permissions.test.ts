// Every endpoint × every kind of caller → the status it must answer (DESIGN §6). Modules
// append their rows to ROWS; placeholders are described in test/support/apiClient.ts.
import { join } from 'node:path';
import { startNginxServer, type NginxServer } from '../support/nginxServer.ts';
import { closedPort } from '../support/nodeServers.ts';
import { nginxEnv } from '../support/proxyHelpers.ts';
import { CALLERS, permissionFixture, permissionTable, startApi, type PermissionFixture, type PermissionRow, type TestApi } from '../support/apiClient.ts';

void CALLERS; // column order of `expect`:
//                                                       anonymous viewer operator projectAdmin outsider globalAdmin
const ROWS: PermissionRow[] = [
  // ---- auth: every signed-in caller, for themselves
  { method: 'GET', path: '/auth/me', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'POST', path: '/auth/refresh', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'GET', path: '/auth/tokens', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'POST', path: '/auth/tokens', body: { name: 'ci' }, expect: [401, 201, 201, 201, 201, 201] },
  { name: 'POST /auth/tokens pinned to {project}', method: 'POST', path: '/auth/tokens', body: { name: 'ci', project: '{project}' }, expect: [401, 201, 201, 201, 400, 201] },
  { name: 'POST /auth/tokens scoped to members:write in {project}', method: 'POST', path: '/auth/tokens',
    body: { name: 'ci', project: '{project}', scopes: ['members:write'] }, expect: [401, 400, 400, 201, 400, 201] },
  { name: 'POST /auth/tokens scoped to users:admin', method: 'POST', path: '/auth/tokens', body: { name: 'ci', scopes: ['users:admin'] }, expect: [401, 400, 400, 400, 400, 201] },
  { method: 'POST', path: '/auth/register', body: { username: '{newUsername}', password: 'long enough password' }, expect: [403, 403, 403, 403, 403, 403] },

  // ---- users: global admins only (and yourself for GET)
  { method: 'GET', path: '/users', expect: [401, 403, 403, 403, 403, 200] },
  { method: 'POST', path: '/users', body: { username: '{newUsername}', password: 'long enough password' }, expect: [401, 403, 403, 403, 403, 201] },
  { name: 'GET /users/{viewerId} (the viewer themselves)', method: 'GET', path: '/users/{viewerId}', expect: [401, 200, 403, 403, 403, 200] },
  { method: 'PATCH', path: '/users/{newUserId}', body: { email: 'x@example.test' }, expect: [401, 403, 403, 403, 403, 200] },
  { method: 'DELETE', path: '/users/{newUserId}', expect: [401, 403, 403, 403, 403, 204] },

  // ---- projects: members see theirs, outsiders get 404, admins of the project change it
  { method: 'GET', path: '/projects', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'POST', path: '/projects', body: { slug: '{newSlug}', display_name: 'New' }, expect: [401, 201, 201, 201, 201, 201] },
  { method: 'GET', path: '/projects/{project}', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'GET', path: '/projects/{project}/members', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'PATCH', path: '/projects/{newProject}', body: { display_name: 'Renamed' }, expect: [401, 403, 403, 200, 404, 200] },
  { method: 'DELETE', path: '/projects/{newProject}', expect: [401, 403, 403, 204, 404, 204] },
  { method: 'PUT', path: '/projects/{newProject}/members/{outsiderId}', body: { role: 'viewer' }, expect: [401, 403, 403, 201, 404, 201] },
  { name: 'DELETE /projects/{newProject}/members/{viewerId} (the viewer leaves)', method: 'DELETE', path: '/projects/{newProject}/members/{viewerId}',
    expect: [401, 204, 403, 204, 404, 204] },
  { name: 'a project that does not exist', method: 'GET', path: '/projects/{newSlug}', expect: [401, 404, 404, 404, 404, 404] },
  { name: 'the default project (nobody is a member)', method: 'GET', path: '/projects/default', expect: [401, 404, 404, 404, 404, 200] },

  // ---- monitoring: nodes:read to see, nodes:write to change, snapshots:write (operators) to push
  { method: 'GET', path: '/nodes', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'POST', path: '/nodes', body: { name: '{newSlug}', project: '{project}', address: '127.0.0.1' }, expect: [401, 403, 403, 201, 404, 201] },
  { method: 'POST', path: '/nodes/import?project={project}', body: [{ name: '{newSlug}', ip: '10.0.0.1' }], expect: [401, 403, 403, 200, 404, 200] },
  { method: 'GET', path: '/nodes/status', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'GET', path: '/nodes/status/summary', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'GET', path: '/nodes/{nodeId}', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'GET', path: '/nodes/{nodeId}/history', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'PATCH', path: '/nodes/{newNodeId}', body: { labels: { zone: 'eu' } }, expect: [401, 403, 403, 200, 404, 200] },
  { method: 'DELETE', path: '/nodes/{newNodeId}', expect: [401, 403, 403, 204, 404, 204] },
  { method: 'POST', path: '/nodes/{nodeId}/snapshots', body: { status: 'up' }, expect: [401, 403, 202, 202, 404, 202] },
  { method: 'GET', path: '/groups', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'POST', path: '/groups', body: { name: 'g', project: '{project}', selector: { labels: {} } }, expect: [401, 403, 403, 201, 404, 201] },
  { method: 'GET', path: '/groups/{groupId}', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'PATCH', path: '/groups/{newGroupId}', body: { min_online: 2 }, expect: [401, 403, 403, 200, 404, 200] },
  { method: 'DELETE', path: '/groups/{newGroupId}', expect: [401, 403, 403, 204, 404, 204] },
  { method: 'GET', path: '/statistics/uptime?node_id={nodeId}', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'GET', path: '/statistics/uptime?group_id={groupId}', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'GET', path: '/statistics/groups', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'GET', path: '/statistics/metrics?metric=load&node_id={nodeId}', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'GET', path: '/alert-channels', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'POST', path: '/alert-channels', body: { project: '{project}', url: 'http://127.0.0.1:9/hook', events: ['node.down'] }, expect: [401, 403, 403, 201, 404, 201] },
  { method: 'DELETE', path: '/alert-channels/{newChannelId}', expect: [401, 403, 403, 204, 404, 204] },

  // ---- jobs: systems are project admins' (systems:write); operators run jobs and templates (jobs:run)
  { method: 'GET', path: '/systems', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'POST', path: '/systems', body: { name: 'h', project: '{project}', hostname: '127.0.0.1', port: 1, username: 'u', auth: { password: 'p' } },
    expect: [401, 403, 403, 201, 404, 201] },
  { method: 'GET', path: '/systems/{systemId}', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'PATCH', path: '/systems/{newSystemId}', body: { description: 'rack 4' }, expect: [401, 403, 403, 200, 404, 200] },
  { method: 'DELETE', path: '/systems/{newSystemId}', expect: [401, 403, 403, 204, 404, 204] },
  { method: 'POST', path: '/systems/{systemId}/test', expect: [401, 403, 403, 200, 404, 200] },
  { method: 'DELETE', path: '/systems/{newSystemId}/host-key', expect: [401, 403, 403, 200, 404, 200] },
  { method: 'GET', path: '/jobs', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'POST', path: '/jobs', body: { command: 'true', project: '{project}', system_ids: ['{systemId}'], schedule_at: '{later}' }, expect: [401, 403, 201, 201, 404, 201] },
  { method: 'GET', path: '/jobs/{jobId}', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'POST', path: '/jobs/{newJobId}/cancel', expect: [401, 403, 200, 200, 404, 200] },
  { method: 'GET', path: '/job-templates', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'POST', path: '/job-templates', body: { name: 't', project: '{project}', command: 'true', system_ids: ['{systemId}'] }, expect: [401, 403, 201, 201, 404, 201] },
  { method: 'GET', path: '/job-templates/{templateId}', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'PATCH', path: '/job-templates/{newTemplateId}', body: { name: 'renamed' }, expect: [401, 403, 200, 200, 404, 200] },
  { method: 'DELETE', path: '/job-templates/{newTemplateId}', expect: [401, 403, 204, 204, 404, 204] },
  { method: 'POST', path: '/job-templates/{templateId}/run', body: { schedule_at: '{later}' }, expect: [401, 403, 201, 201, 404, 201] },
  { method: 'GET', path: '/dashboard', expect: [401, 200, 200, 200, 200, 200] },

  // ---- proxies: proxies:read to see, proxies:write (project admins) to change, certs:write (operators) to order certificates.
  // A proxy name is global (it is the nginx file's name): one taken in a project you cannot see is a 409, not a 404.
  { method: 'GET', path: '/proxies', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'GET', path: '/proxies/health', expect: [401, 200, 200, 200, 200, 200] },
  { method: 'GET', path: '/proxies/{proxyName}', expect: [401, 200, 200, 200, 404, 200] },
  { method: 'GET', path: '/proxies/{proxyName}/certificate', expect: [401, 200, 200, 200, 404, 200] },
  { name: 'PUT /proxies/{newSlug} (create)', method: 'PUT', path: '/proxies/{newSlug}',
    body: { project: '{project}', domain: '{newSlug}.opl.test', upstream_host: '127.0.0.1', upstream_port: 9, require_healthy: false }, expect: [401, 403, 403, 201, 404, 201] },
  { name: 'PUT /proxies/{newProxyName} (update)', method: 'PUT', path: '/proxies/{newProxyName}',
    body: { domain: '{newProxyName}.opl.test', upstream_host: '127.0.0.1', upstream_port: 10, require_healthy: false }, expect: [401, 403, 403, 200, 409, 200] },
  { method: 'DELETE', path: '/proxies/{newProxyName}', expect: [401, 403, 403, 204, 404, 204] },
  { method: 'POST', path: '/proxies/{newProxyName}/ssl', body: {}, expect: [401, 403, 202, 202, 404, 202] },
  // POST /proxies/sync needs proxies:write in some project, which every caller here gains by
  // creating one (POST /projects above): its roles are tested in test/api/proxies.test.ts.
];

describe('API permissions: every endpoint with every role', function () {
  this.timeout(60_000);
  let api: TestApi;
  let fixture: PermissionFixture;
  let nginx: NginxServer;
  before(async () => {
    nginx = await startNginxServer();
    // ACME points at a closed loopback port: orders fail fast, and nothing leaves the machine.
    const dead = `http://127.0.0.1:${await closedPort()}/`;
    api = await startApi({ env: { ...nginxEnv(nginx, join(nginx.prefix, 'certs')), ACME_DIRECTORY_URL: `${dead}directory` } });
    fixture = await permissionFixture(api);
    // A certificate (a failed order is one too) for GET /proxies/{proxyName}/certificate.
    const ordered = await fixture.clients.projectAdmin.post(`/proxies/${fixture.vars['proxyName']}/ssl`, {});
    if (ordered.status !== 202) throw new Error(ordered.text);
  });
  after(async () => {
    await api?.close();
    await nginx?.stop();
  });

  permissionTable(ROWS, () => fixture);
});
