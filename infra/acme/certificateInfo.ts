// What the API shows of a certificate (SPEC §7: not_before, expiry, issuer, serial), read
// from the leaf of a PEM chain with node:crypto. The serial is also used in file names,
// so it is checked to be plain hex here, once.
import { X509Certificate } from 'node:crypto';

export type CertificateInfo = {
  /** ISO 8601, UTC. */
  notBefore: string;
  /** ISO 8601, UTC (the certificate's notAfter). */
  expiry: string;
  /** The issuer's CN, or the whole issuer name when it has none. */
  issuer: string;
  /** Lowercase hex without separators, safe in a file name. */
  serial: string;
};

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/** The certificates of a PEM chain, leaf first, each as its own PEM block. */
export const splitChain = (chainPem: string): string[] => chainPem.match(PEM_CERTIFICATE) ?? [];

const isoDate = (text: string, field: string): string => {
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) throw new Error(`the certificate's ${field} (${JSON.stringify(text)}) is not a date`);
  return date.toISOString();
};

/** `issuer` is one attribute per line ("C=US\nO=…\nCN=…"). */
const issuerName = (issuer: string): string => {
  const lines = issuer.split('\n').filter(Boolean);
  const cn = lines.find((l) => l.startsWith('CN='));
  return cn ? cn.slice(3) : lines.join(', ');
};

/** Reads the leaf (the first certificate) of `chainPem`; throws when there is none or a field does not parse. */
export const certificateInfo = (chainPem: string): CertificateInfo & { leaf: X509Certificate } => {
  const [first] = splitChain(chainPem);
  if (!first) throw new Error('no PEM certificate in the chain');
  const leaf = new X509Certificate(first);
  const serial = leaf.serialNumber.toLowerCase();
  if (!/^[0-9a-f]+$/.test(serial)) throw new Error(`the certificate's serial ${JSON.stringify(serial)} is not hex`);
  return {
    notBefore: isoDate(leaf.validFrom, 'notBefore'),
    expiry: isoDate(leaf.validTo, 'notAfter'),
    issuer: issuerName(leaf.issuer),
    serial,
    leaf,
  };
};
