// SSH failures with stable codes (infra/http/errorStatus.ts maps them). Messages name the
// host, port and user; never a password, key or passphrase.
import { AppError } from '../errors.ts';

export type SshErrorCode = 'HOST_KEY_MISMATCH' | 'SSH_AUTH_FAILED' | 'SSH_UNREACHABLE' | 'SSH_CONNECT_TIMEOUT' | 'SSH_ERROR';

export class SshError extends AppError {
  declare readonly code: SshErrorCode;

  constructor(code: SshErrorCode, message: string, details?: Record<string, unknown>) {
    super(code, message, details);
  }
}

/**
 * The connection was dropped before or during the handshake: what sshd does past its
 * MaxStartups, so it is worth retrying after a pause (code SSH_ERROR once we give up).
 */
export class SshDroppedError extends SshError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('SSH_ERROR', message, details);
  }
}
