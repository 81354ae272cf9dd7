// Security headers (helmet's, with a CSP tight enough for an API and loose enough for
// /docs). Our helmet configuration depends on nothing in the request, so its headers are
// worked out once at start and then set in one step; that saves a dozen nested
// middleware calls on every request.
import type { RequestHandler, Response } from 'express';
import helmet from 'helmet';

const helmetMiddleware = () =>
  helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      // Swagger UI is served from 'self' with no inline script; it does set inline styles and data: images.
      directives: {
        defaultSrc: ["'self'"],
        baseUri: ["'none'"],
        connectSrc: ["'self'"],
        fontSrc: ["'self'", 'data:'],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        imgSrc: ["'self'", 'data:'],
        objectSrc: ["'none'"],
        scriptSrc: ["'self'"],
        scriptSrcAttr: ["'none'"],
        styleSrc: ["'self'", "'unsafe-inline'"],
      },
    },
  });

/** What helmet sets on a response, recorded from one dry run. */
export const helmetHeaders = (): ReadonlyArray<readonly [string, string]> => {
  const headers: Array<readonly [string, string]> = [];
  const recorder = {
    setHeader: (name: string, value: unknown) => void headers.push([name, String(value)]),
    removeHeader: () => undefined,
  } as unknown as Response;
  let called = false;
  helmetMiddleware()({ headers: {} } as never, recorder, () => { called = true; });
  // helmet finishes synchronously; if a future version did not, recording would be wrong.
  if (!called) throw new Error('helmet did not finish synchronously: its headers cannot be recorded');
  return headers;
};

export const securityHeaders = (): RequestHandler => {
  const headers = helmetHeaders();
  return (_req, res, next) => {
    for (const [name, value] of headers) res.setHeader(name, value);
    next();
  };
};
