// The one table from stable error codes to HTTP statuses (DESIGN §7). A code missing here
// answers 400 if the error is the caller's (DomainError/AppError), 500 otherwise.
export const ERROR_STATUS: Readonly<Record<string, number>> = {
  VALIDATION_FAILED: 400,
  BAD_REQUEST: 400,
  BAD_JSON: 400,
  INVALID_EVENT: 400,
  UNAUTHORIZED: 401,
  TOKEN_EXPIRED: 401,
  FORBIDDEN: 403,
  REGISTRATION_DISABLED: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  CONFLICT: 409,
  ALREADY_EXISTS: 409,
  IDEMPOTENCY_IN_PROGRESS: 409,
  PRECONDITION_FAILED: 412,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  IDEMPOTENCY_KEY_REUSED: 422,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  VAULT_DECRYPT_FAILED: 500,
  TIMEOUT: 503,
  UNAVAILABLE: 503,
};

export const statusOf = (code: string, fallback = 400): number => ERROR_STATUS[code] ?? fallback;
