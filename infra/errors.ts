// Errors are classes with a stable code. Every layer throws these (or anything else
// carrying a `code` from infra/http's status table); nothing maps messages.
export class AppError extends Error {
  constructor(readonly code: string, message: string, readonly details?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
  }
}

/** The stream was not at the expected revision (or a concurrent writer won the race). */
export class ConcurrencyError extends AppError {
  constructor(readonly stream: string, readonly expected: string, readonly actual: bigint | null) {
    super('CONFLICT', `stream ${stream} is at ${actual === null ? 'no revision (it does not exist)' : `revision ${actual}`}, expected ${expected}`);
  }
}

/** An event that cannot be stored: wrong shape, unknown type, data that is not a JSON object. */
export class InvalidEventError extends AppError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('INVALID_EVENT', message, details);
  }
}

export class NotFoundError extends AppError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

export class ConfigError extends AppError {
  constructor(message: string) {
    super('CONFIG_INVALID', message);
  }
}

export class TimeoutError extends AppError {
  constructor(message: string) {
    super('TIMEOUT', message);
  }
}
