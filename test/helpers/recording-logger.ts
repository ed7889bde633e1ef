import { createLogger, type Logger } from '../../src/telemetry/logger.js';

/** The product's JSON logger at info, writing its lines to `lines` (parsed) instead of stdout. */
export function recordingLogger(
  labels: Record<string, string> = {},
  projectId = 'test',
): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: 'info',
    projectId: () => projectId,
    labels,
    destination: { write: (line: string) => lines.push(JSON.parse(line)) },
  });
  return { logger, lines };
}
