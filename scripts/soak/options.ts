/** Command-line options of `npm run soak`. */
export type SoakOptions = {
  /** Total load time, warm-up included. */
  durationMs: number;
  /** Share of the duration treated as warm-up for the memory check. */
  warmUpShare: number;
  /** Keep-alive clients sending back to back. */
  concurrency: number;
  /** `batch` (default off Cloud Run) or `request` (flush before answering). */
  exportMode: 'batch' | 'request';
  /** Memory of the Cloud Run instance to imitate (deploy.sh's default is 512Mi). */
  memoryMiB: number;
};

export const USAGE = `Usage: npm run soak -- [--duration 2m] [--concurrency 8] [--export-mode batch|request]
                        [--memory-mib 512]

Steady load through both roles (production build) with every request traced and exported to
a local OTLP receiver; fails unless every request succeeded, every trace arrived complete and
memory stayed flat after the warm-up (the first quarter). Both roles run with the Node options
of a Cloud Run instance of --memory-mib. Durations: 90s, 2m, 1h, or ms.`;

const DEFAULTS: SoakOptions = {
  durationMs: 2 * 60_000,
  warmUpShare: 0.25,
  concurrency: 8,
  exportMode: 'batch',
  memoryMiB: 512,
};

export function parseSoakOptions(argv: readonly string[]): SoakOptions {
  const options = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = (argv[i] ?? '').split('=', 2);
    const value = () => {
      const next = inline ?? argv[++i];
      if (next === undefined) throw new Error(`${flag} needs a value\n\n${USAGE}`);
      return next;
    };
    switch (flag) {
      case '--duration':
        options.durationMs = parseDuration(value());
        break;
      case '--concurrency':
        options.concurrency = positiveInteger(flag, value());
        break;
      case '--export-mode': {
        const mode = value();
        if (mode !== 'batch' && mode !== 'request') {
          throw new Error(`--export-mode must be batch or request (got ${mode})`);
        }
        options.exportMode = mode;
        break;
      }
      case '--memory-mib':
        options.memoryMiB = positiveInteger(flag, value());
        break;
      case '--help':
      case '-h':
        throw new Error(USAGE);
      default:
        throw new Error(`unknown option ${argv[i]}\n\n${USAGE}`);
    }
  }
  return options;
}

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  const ms = match ? Number(match[1]) * (UNIT_MS[match[2] ?? 'ms'] ?? 1) : Number.NaN;
  if (!(ms >= 10_000))
    throw new Error(`--duration must be at least 10s, like 90s or 2m (got ${text})`);
  return ms;
}

function positiveInteger(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`${flag} must be a positive integer (got ${text})`);
  return n;
}
