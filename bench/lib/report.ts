import { GRPC_MODES } from './grpc-load.ts';
import { NOISY_SHARE, type Results } from './results.ts';
import { median } from './stats.ts';

/** The Markdown report printed at the end of `npm run bench`. */

const fixed = (value: number, digits = 0) =>
  Number.isFinite(value) ? value.toFixed(digits) : 'n/a';
const ms = (value: number) => fixed(value, value < 10 ? 2 : 1);
const ratio = (value: number) => fixed(value, 2);

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

function noiseNote(results: Results): string {
  const { selection, runs } = results.endToEnd;
  const shares = runs.map((run) => run.otherCpuShare);
  const parts = [
    `Other processes took a median ${fixed(100 * median(shares))}% (at most ${fixed(100 * Math.max(0, ...shares))}%) of the CPU during the runs.`,
  ];
  if (selection.dropped.length > 0) {
    const dropped = selection.dropped
      .map((d) => `${d.config} in round ${d.round + 1} (${fixed(100 * d.otherCpuShare)}%)`)
      .join(', ');
    parts.push(
      `**Left out of the figures because other processes took more than ${fixed(100 * NOISY_SHARE)}% of the CPU meanwhile: ${dropped}.**`,
    );
  }
  if (selection.allNoisy.length > 0) {
    parts.push(
      `**No quiet run for ${selection.allNoisy.join(', ')}, so no run is left out: the figures are skewed; rerun on an idle machine.**`,
    );
  }
  return parts.join(' ');
}

export function renderReport(results: Results): string {
  const { machine, settings, endToEnd, grpc, coldStart, targets } = results;
  const out: string[] = [];
  out.push(
    `## Benchmark (${settings.quick ? 'quick' : 'full'} run, ${results.startedAt})`,
    '',
    `${machine.cpus} CPUs (${machine.model}), Linux ${machine.kernel}, Node ${machine.node}, ${machine.wrk}, ${machine.h2load}. ` +
      `Load average before/after: ${machine.loadAverage.join(' ')} / ${results.loadAverageAfter.join(' ')}. ` +
      `Pinning: ${settings.pinning}. Product ${settings.revision}, NODE_OPTIONS (Dockerfile): ${settings.shippedNodeOptions ?? 'none'}. ` +
      `Took ${fixed(results.durationSeconds)} s.`,
    '',
  );

  const configs = endToEnd.configs;
  const baseline = configs.find((c) => c.id === 'baseline');
  out.push(
    `### End to end: POST /greet, api + backend, ${settings.connections} connections, ` +
      `${settings.warmupSeconds} s warm-up per pair, then ${settings.rounds} rounds of ${settings.e2eSeconds} s ` +
      'per configuration in rotating order',
    '',
    table(
      [
        'configuration',
        'req/s',
        'vs baseline',
        'p50 ms',
        'p90 ms',
        'p99 ms',
        'CPU ms/req api',
        'backend',
        'total',
        'wrk',
        'sink',
        'errors',
      ],
      configs.map((c) => [
        c.label,
        fixed(c.summary.requestsPerSecond),
        baseline ? ratio(c.summary.requestsPerSecond / baseline.summary.requestsPerSecond) : 'n/a',
        ms(c.summary.latencyMs.p50),
        ms(c.summary.latencyMs.p90),
        ms(c.summary.latencyMs.p99),
        fixed(c.summary.cpuMsPerRequest.api, 3),
        fixed(c.summary.cpuMsPerRequest.backend, 3),
        fixed(c.summary.cpuMsPerRequest.total, 3),
        fixed(c.summary.cpuMsPerRequest.load, 3),
        fixed(c.summary.cpuMsPerRequest.bench, 3),
        String(c.summary.errors),
      ]),
    ),
    '',
    'CPU ms/req: user + system time per request from /proc (api and backend processes; wrk; ' +
      'the bench process, which runs the span sink).',
    '',
    noiseNote(results),
    '',
    'Ratios paired within each round (median, [min-max] over rounds):',
    '',
    table(
      ['ratio', 'median', 'range'],
      endToEnd.ratios.map((r) => [
        r.noisy ? `${r.label} (**from disturbed runs only**)` : r.label,
        ratio(r.median),
        `${ratio(r.min)}-${ratio(r.max)}`,
      ]),
    ),
    '',
  );

  out.push(
    '### Memory (RSS, MiB): idle = after start and one request; peak = high-water mark (VmHWM) after all runs',
    '',
    table(
      [
        'configuration',
        'NODE_OPTIONS',
        'api idle',
        'api peak',
        'backend idle',
        'backend peak',
        'req/s',
      ],
      configs.map((c) => [
        c.label,
        c.nodeOptions ?? '(V8 defaults)',
        fixed(c.summary.idleRssMiB.api),
        fixed(c.summary.peakRssMiB.api),
        fixed(c.summary.idleRssMiB.backend),
        fixed(c.summary.peakRssMiB.backend),
        fixed(c.summary.requestsPerSecond),
      ]),
    ),
    '',
  );

  if (endToEnd.spans.length > 0) {
    out.push(
      `Spans exported to the local OTLP sink (${settings.spanSink}); expected: 2 per sampled request from the api, 1 from the backend, ` +
        "none for the front end's unsampled requests, 3 for each pair's check before the load and 1 for the backend's readiness call " +
        '(wrk does not count requests in flight when it stops, so a few more arrive). ' +
        "Undelivered: what each role's SDK counted as dropped on a full queue or failed to export " +
        '(`otel.sdk.processor.span.processed` with an `error.type`), from its metric export at ' +
        'shutdown; "no report" when that export did not arrive:',
      '',
      table(
        [
          'configuration',
          'api received / expected',
          'api undelivered',
          'backend received / expected',
          'backend undelivered',
        ],
        endToEnd.spans.map((s) => [
          s.config,
          `${s.received.api} / ${s.expected.api}`,
          String(s.undelivered.api ?? 'no report'),
          `${s.received.backend} / ${s.expected.backend}`,
          String(s.undelivered.backend ?? 'no report'),
        ]),
      ),
      '',
    );
  }

  if (grpc.summary.length > 0) {
    const modes = GRPC_MODES.filter((mode) => grpc.summary.some((s) => s.mode === mode.id));
    out.push(
      `### gRPC alone: h2load sending Greet frames to the backend, ${settings.grpcRounds} x ${settings.grpcSeconds} s per cell`,
      '',
      table(
        [
          'backend',
          ...modes.flatMap((m) => [`${m.label} req/s`, 'mean ms', 'CPU ms/req']),
          'errors',
        ],
        [...new Set(grpc.summary.map((s) => s.target))].map((target) => {
          const cells = grpc.summary.filter((s) => s.target === target);
          return [
            cells[0]?.label ?? target,
            ...modes.flatMap((mode) => {
              const cell = cells.find((s) => s.mode === mode.id);
              return cell
                ? [
                    cell.noisy
                      ? `${fixed(cell.requestsPerSecond)} (disturbed)`
                      : fixed(cell.requestsPerSecond),
                    ms(cell.meanLatencyMs),
                    fixed(cell.cpuMsPerRequest, 3),
                  ]
                : ['', '', ''];
            }),
            String(cells.reduce((total, s) => total + s.errors, 0)),
          ];
        }),
      ),
      '',
      `CPU ms/req: the backend process only. Medians over the runs in which other processes took at most ${fixed(
        100 * NOISY_SHARE,
      )}% of the CPU. Other processes took a median ${fixed(
        100 * median(grpc.runs.map((run) => run.otherCpuShare)),
      )}% (at most ${fixed(100 * Math.max(0, ...grpc.runs.map((run) => run.otherCpuShare)))}%) of the CPU during these runs.`,
      '',
    );
  }

  if (coldStart.cases.length > 0) {
    out.push(
      `### Cold start: spawn to first successful response (${settings.coldStartRuns} runs each, interleaved)`,
      '',
      table(
        ['case', 'median ms', 'min', 'max'],
        coldStart.cases.map((c) => [c.label, fixed(c.medianMs), fixed(c.minMs), fixed(c.maxMs)]),
      ),
      '',
      `Other processes took ${fixed(100 * coldStart.otherCpuShare)}% of the CPU during the cold starts.`,
      '',
    );
  }

  out.push(
    '### Targets',
    '',
    table(
      ['target', 'measured', 'met'],
      targets.map((t) => [
        t.target,
        t.measured,
        t.met === undefined ? 'not measured' : t.met ? 'yes' : '**no**',
      ]),
    ),
    '',
  );
  return out.join('\n');
}
