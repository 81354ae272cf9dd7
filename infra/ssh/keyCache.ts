// Parsed private keys, so a passphrase-protected key is decrypted once per pool rather
// than on every connection: its bcrypt KDF blocks the event loop for ~250 ms a time.
// Entries are found by a keyed hash of key and passphrase, never by the secrets.
import { createHmac, randomBytes } from 'node:crypto';
import ssh2, { type ParsedKey } from 'ssh2';
import { SshError } from './sshError.ts';

export type KeyCache = {
  /** The parsed key, or SshError SSH_AUTH_FAILED (`who` names the target in the message). */
  get(privateKey: string, passphrase: string | null | undefined, who: string): ParsedKey;
  clear(): void;
};

export const createKeyCache = (maxEntries = 256): KeyCache => {
  const secret = randomBytes(32);
  const keys = new Map<string, ParsedKey>();
  return {
    get(privateKey, passphrase, who) {
      const id = createHmac('sha256', secret).update(JSON.stringify([privateKey, passphrase ?? null])).digest('base64');
      const hit = keys.get(id);
      if (hit) {
        keys.delete(id); // re-inserted below: most recently used last
        keys.set(id, hit);
        return hit;
      }
      const parsed = parse(privateKey, passphrase, who);
      keys.set(id, parsed);
      if (keys.size > maxEntries) keys.delete(keys.keys().next().value!);
      return parsed;
    },
    clear: () => keys.clear(),
  };
};

const parse = (privateKey: string, passphrase: string | null | undefined, who: string): ParsedKey => {
  let parsed: ParsedKey | ParsedKey[] | Error;
  try {
    parsed = ssh2.utils.parseKey(privateKey, passphrase ?? undefined);
  } catch (err) {
    parsed = err instanceof Error ? err : new Error(String(err));
  }
  // OpenSSH's format can hold several keys; it holds one in practice.
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (key && !(key instanceof Error) && key.isPrivateKey()) return key;
  // ssh2's messages carry no key material, but we say it in our own words anyway.
  const why = key instanceof Error && /passphrase|decrypt|encrypted/i.test(key.message)
    ? 'the private key is encrypted and the passphrase is missing or wrong'
    : 'the private key could not be read (expected an OpenSSH or PEM private key)';
  throw new SshError('SSH_AUTH_FAILED', `cannot authenticate as ${who}: ${why}`);
};
