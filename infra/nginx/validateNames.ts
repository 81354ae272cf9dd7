// The only values that may reach an nginx configuration or a file path (DESIGN §6). Each
// check is a whitelist over the whole string, so nothing nginx would read as syntax
// (`;`, braces, quotes, `$`, `#`, whitespace, newlines) can pass; the renderer checks
// again (defence in depth), and the API layer uses the same functions for its 400s.
import { isIP } from 'node:net';
import { z } from 'zod';
import { AppError } from '../errors.ts';

/** A proxy name: a slug, also the file name NAME.conf. */
export const PROXY_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

export const isProxyName = (value: unknown): value is string => typeof value === 'string' && PROXY_NAME.test(value);

/** An RFC 1123 host name: dot-separated labels of 1–63 letters, digits and inner hyphens, 253 chars at most, no trailing dot; the last label is not all digits (that would be an IP address, or a typo of one). */
export const isHostName = (value: unknown): value is string => {
  if (typeof value !== 'string' || value.length === 0 || value.length > 253) return false;
  const labels = value.split('.');
  return labels.every((l) => LABEL.test(l)) && !/^\d+$/.test(labels[labels.length - 1]!);
};

/** A domain a proxy serves: a host name, optionally `*.` + a host name (nginx's wildcard). */
export const isDomainName = (value: unknown): value is string =>
  typeof value === 'string' && (value.startsWith('*.') ? isHostName(value.slice(2)) : isHostName(value));

/** An IPv4 or IPv6 address, without an IPv6 zone (`%eth0`) or brackets. */
export const isIpAddress = (value: unknown): value is string =>
  typeof value === 'string' && !value.includes('%') && isIP(value) !== 0;

/** Where a proxy forwards to: a host name or an IP address. */
export const isUpstreamHost = (value: unknown): value is string => isHostName(value) || isIpAddress(value);

export const isPort = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 65535;

export const UPSTREAM_SCHEMES = ['http', 'https'] as const;
export type UpstreamScheme = (typeof UPSTREAM_SCHEMES)[number];
export const isUpstreamScheme = (value: unknown): value is UpstreamScheme => UPSTREAM_SCHEMES.includes(value as UpstreamScheme);

/** An absolute path nginx can read as one bare word: no `..` segment, nothing but [A-Za-z0-9._/-]. */
export const isSafePath = (value: unknown): value is string =>
  typeof value === 'string' && /^\/[A-Za-z0-9._/-]*$/.test(value) && !value.split('/').includes('..') && value.length <= 4096;

/** Throws VALIDATION_FAILED naming the field when `ok` is false; the value is shown JSON-quoted, so a newline cannot forge a log line. */
export const check = (ok: boolean, field: string, value: unknown, expected: string): void => {
  if (!ok) throw new AppError('VALIDATION_FAILED', `${field} ${JSON.stringify(value)?.slice(0, 300) ?? String(value)} is not ${expected}`, { field });
};

/** Path words under /proxies that are endpoints, so never proxy names. */
export const RESERVED_PROXY_NAMES: readonly string[] = ['health', 'sync'];

/** A proxy name at the API's edge (path parameter, registry entry). */
export const ProxyName = z.string()
  .refine(isProxyName, 'must be a slug: lower-case letters, digits and dashes, 1–63 characters, starting with a letter or digit')
  .refine((s) => !RESERVED_PROXY_NAMES.includes(s), `must not be ${RESERVED_PROXY_NAMES.join(' or ')} (endpoints under /proxies)`);
