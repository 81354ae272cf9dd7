// ACME failures with the stable code of SPEC §7 (infra/http/errorStatus.ts maps it). The
// message and details carry the CA's problem (RFC 8555 §6.7: `type` + `detail`) or the
// transport error, and the step that failed; never a key.
import { AppError } from '../errors.ts';

/** The steps of one issuance, in order; also what `onProgress` reports. */
export type AcmeStep = 'directory' | 'account' | 'order' | 'challenge' | 'finalize' | 'certificate';

/** An RFC 7807 problem document as an ACME server sends it. */
export type AcmeProblem = { type: string; detail: string };

/** What came from outside (the CA, a socket) goes into one line of bounded length: a CA's text cannot forge log lines. */
export const oneLine = (text: string, max = 1000): string => {
  const flat = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
};

export class AcmeIssuanceError extends AppError {
  declare readonly code: 'SSL_ISSUANCE_FAILED';

  constructor(readonly step: AcmeStep, domain: string, readonly problem: AcmeProblem | null, why: string) {
    const what = problem ? `${oneLine(problem.type, 200)}: ${oneLine(problem.detail)}` : oneLine(why);
    super('SSL_ISSUANCE_FAILED', `ACME ${step} for ${domain} failed: ${what}`, {
      acme_type: problem ? oneLine(problem.type, 200) : null,
      acme_detail: problem ? oneLine(problem.detail) : null,
      step,
      domain,
    });
  }
}
