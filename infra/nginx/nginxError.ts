// nginx failures with the stable codes of SPEC §7 (infra/http/errorStatus.ts maps them).
// `stderr` is nginx's own message, trimmed: it names files and lines, never secrets.
import { AppError } from '../errors.ts';

export type NginxErrorCode = 'NGINX_TEST_FAILED' | 'NGINX_RELOAD_FAILED' | 'CONFIG_WRITE_FAILED';

export class NginxError extends AppError {
  declare readonly code: NginxErrorCode;

  constructor(code: NginxErrorCode, message: string, readonly stderr: string, details?: Record<string, unknown>) {
    super(code, message, { ...details, stderr });
  }
}
