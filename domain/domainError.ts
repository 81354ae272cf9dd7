// A decision the domain refuses, with a stable code (e.g. JOB_CANCELLED). The HTTP
// layer maps codes to statuses; the domain knows nothing of HTTP.
export class DomainError extends Error {
  constructor(readonly code: string, message: string, readonly details?: Record<string, unknown>) {
    super(message);
    this.name = 'DomainError';
  }
}
