// What the pool is told about a host. Credentials stay in memory only: they are never
// logged, put into an error, or used as a map key in clear (see connectionKey).
export type SshCredentials = { password: string } | { privateKey: string; passphrase?: string | null };

export type SshTarget = {
  host: string;
  port: number;
  username: string;
  credentials: SshCredentials;
  /** The pinned host key ('SHA256:…'), or null on first contact (then any key is accepted and reported back). */
  hostKeyFingerprint: string | null;
};

/** user@host:port, for messages and logs. */
export const describeTarget = (t: Pick<SshTarget, 'host' | 'port' | 'username'>): string => `${t.username}@${t.host}:${t.port}`;
