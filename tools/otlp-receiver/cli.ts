import { parseArgs } from 'node:util';
import { startOtlpReceiver } from './receiver.ts';
import { createTraceTreePrinter } from './trace-tree.ts';

const USAGE = `Usage: node tools/otlp-receiver/cli.ts [--port 4318] [--host 127.0.0.1] [--quiet-ms 300]
Receives OTLP/HTTP traces and metrics and prints each trace as a tree once it has been quiet.`;

function parsePort(text: string, flag: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0 || value > 65_535) {
    throw new Error(`${flag} "${text}" is not a port: use an integer from 0 to 65535\n${USAGE}`);
  }
  return value;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '4318' },
      host: { type: 'string', default: '127.0.0.1' },
      'quiet-ms': { type: 'string', default: '300' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const receiver = await startOtlpReceiver({
    port: parsePort(values.port, '--port'),
    host: values.host,
    retain: false,
  });
  const printer = createTraceTreePrinter({
    quietMs: parsePort(values['quiet-ms'], '--quiet-ms'),
    color: process.stdout.isTTY === true && !process.env.NO_COLOR,
    write: (text) => process.stdout.write(text),
  });
  receiver.onSpans(printer.add);
  process.stdout.write(
    `OTLP receiver listening on ${receiver.url} (set OTEL_EXPORTER_OTLP_ENDPOINT=${receiver.url})\n`,
  );

  const stop = () => {
    printer.flush();
    printer.close();
    receiver.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error('otlp-receiver: close failed:', error);
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => {
  console.error(`otlp-receiver: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
