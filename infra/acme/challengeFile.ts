// The HTTP-01 answer as a file, where nginx serves `/.well-known/acme-challenge/<token>`
// from the webroot (infra/nginx/renderServerBlock.ts). nginx's workers run as an
// unprivileged user when we are root, so everything is made world-readable explicitly:
// the umask (077 on some hosts) would otherwise decide.
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A base64url token (RFC 8555 §8.3) and nothing else: it comes from the CA and becomes a file name. */
export const isChallengeToken = (token: unknown): token is string => typeof token === 'string' && /^[A-Za-z0-9_-]{1,256}$/.test(token);

const mkdirReadable = async (dir: string): Promise<void> => {
  try {
    await mkdir(dir, { mode: 0o755 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return; // the operator's (or a concurrent issuance's): leave it as it is
    throw err;
  }
  await chmod(dir, 0o755);
};

/** Writes WEBROOT/.well-known/acme-challenge/TOKEN (0644, directories 0755); returns its path. */
export const writeChallengeFile = async (webroot: string, token: string, keyAuthorization: string): Promise<string> => {
  if (!isChallengeToken(token)) throw new Error(`the CA sent a challenge token that is not base64url: ${JSON.stringify(String(token).slice(0, 80))}`);
  await mkdir(webroot, { recursive: true, mode: 0o755 });
  const wellKnown = join(webroot, '.well-known');
  const dir = join(wellKnown, 'acme-challenge');
  await mkdirReadable(wellKnown);
  await mkdirReadable(dir);
  const path = join(dir, token);
  try {
    await writeFile(path, keyAuthorization, { mode: 0o644 });
    await chmod(path, 0o644);
  } catch (err) {
    await removeChallengeFile(path); // the caller only removes what it was told about
    throw err;
  }
  return path;
};

/** Removes a challenge file; already gone is fine. */
export const removeChallengeFile = (path: string): Promise<void> => rm(path, { force: true });
