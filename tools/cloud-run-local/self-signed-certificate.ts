import { execFile } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface SelfSignedCertificateOptions {
  commonName: string;
  /** openssl `subjectAltName` entries, e.g. `DNS:localhost`, `IP:127.0.0.1`. */
  subjectAltNames?: string[];
  days?: number;
}

export interface SelfSignedCertificate {
  privateKey: KeyObject;
  privateKeyPem: string;
  certificatePem: string;
}

/**
 * A fresh RSA-2048 key and a self-signed X.509 certificate that carries its public key and can be
 * used as its own trust anchor (`ca` option, NODE_EXTRA_CA_CERTS). Needs the `openssl` CLI.
 */
export async function createSelfSignedCertificate(
  options: SelfSignedCertificateOptions,
): Promise<SelfSignedCertificate> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const privateKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const dir = await mkdtemp(join(tmpdir(), 'cloud-run-local-'));
  try {
    const keyFile = join(dir, 'key.pem');
    const configFile = join(dir, 'openssl.cnf');
    await writeFile(keyFile, privateKeyPem, { mode: 0o600 });
    await writeFile(configFile, opensslConfig(options));
    const args = ['req', '-x509', '-new', '-sha256', '-key', keyFile, '-config', configFile];
    args.push('-days', String(options.days ?? 30));
    const { stdout } = await runOpenssl(args);
    return { privateKey, privateKeyPem, certificatePem: stdout };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function opensslConfig(options: SelfSignedCertificateOptions): string {
  const lines = [
    '[req]',
    'distinguished_name = dn',
    'x509_extensions = ext',
    'prompt = no',
    '[dn]',
    `CN = ${options.commonName}`,
    '[ext]',
    'basicConstraints = critical,CA:TRUE',
    'keyUsage = critical,digitalSignature,keyEncipherment,keyCertSign',
    'subjectKeyIdentifier = hash',
  ];
  if (options.subjectAltNames?.length) {
    lines.push('extendedKeyUsage = serverAuth');
    lines.push(`subjectAltName = ${options.subjectAltNames.join(',')}`);
  }
  return `${lines.join('\n')}\n`;
}

async function runOpenssl(args: string[]): Promise<{ stdout: string }> {
  try {
    return await execFileAsync('openssl', args, { encoding: 'utf8' });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(
      `cloud-run-local: could not create a certificate with the openssl CLI (${reason}). ` +
        'Install openssl (Debian: apt-get install openssl) and make sure it is on PATH.',
      { cause: error },
    );
  }
}
