// Host key fingerprints in the form `ssh-keygen -l` prints, so an admin can compare the
// pinned value with what the host shows.
import { createHash } from 'node:crypto';

/** 'SHA256:' + unpadded base64 of the SHA-256 of the key blob (as sent in the handshake). */
export const fingerprintOf = (keyBlob: Buffer): string =>
  `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;

/** Pins may have been stored with base64 padding; compare without it. */
export const sameFingerprint = (a: string, b: string): boolean => a.trim().replace(/=+$/, '') === b.trim().replace(/=+$/, '');
