import type { Results, TargetCheck } from './results.ts';

/** The targets (ratios measured in one run on a 2-core machine). Reported, never enforced. */
export const TARGETS = Object.freeze({
  defaultVsBaseline: 0.6,
  exportVsBaseline: 0.5,
  exportVsOff: 0.8,
  p99VsBaseline: 2,
  coldStartApiMs: 150,
  coldStartBackendMs: 120,
  idleRssMiB: 80,
  peakRssMiB: 256,
});

const two = (value: number) => value.toFixed(2);

export function checkTargets(results: Results): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const ratio = (id: string) => results.endToEnd.ratios.find((r) => r.id === id);
  const describe = (id: string) => {
    const r = ratio(id);
    if (!r) return undefined;
    const implied = ratio(`cpu ${id}`);
    const cpu = implied ? `; CPU-implied ${two(implied.median)}` : '';
    const noisy = r.noisy ? ', from disturbed runs only' : '';
    return { r, text: `${two(r.median)} (rounds ${two(r.min)}-${two(r.max)}${cpu}${noisy})` };
  };
  const ratioTarget = (target: string, id: string, met: (value: number) => boolean) => {
    const found = describe(id);
    checks.push({
      target,
      measured: found?.text ?? 'not measured',
      met: found ? met(found.r.median) : undefined,
    });
  };
  ratioTarget(
    `throughput, telemetry on (default sampler) >= ${TARGETS.defaultVsBaseline} x baseline`,
    'default/baseline',
    (value) => value >= TARGETS.defaultVsBaseline,
  );
  ratioTarget(
    `throughput, 100% sampled + exported >= ${TARGETS.exportVsBaseline} x baseline`,
    'export/baseline',
    (value) => value >= TARGETS.exportVsBaseline,
  );
  ratioTarget(
    `throughput, 100% sampled + exported >= ${TARGETS.exportVsOff} x telemetry off`,
    'export/off',
    (value) => value >= TARGETS.exportVsOff,
  );
  for (const [id, what] of [
    ['p99 default/baseline', 'telemetry on (default sampler)'],
    ['p99 export/baseline', '100% sampled + exported'],
  ] as const) {
    ratioTarget(
      `p99 latency, ${what} <= ${TARGETS.p99VsBaseline} x baseline`,
      id,
      (value) => value <= TARGETS.p99VsBaseline,
    );
  }

  for (const [role, limit, id, where] of [
    ['api', TARGETS.coldStartApiMs, 'api', ''],
    ['backend', TARGETS.coldStartBackendMs, 'backend', ''],
    ['api', TARGETS.coldStartApiMs, 'api-cloud-run', ' as on Cloud Run'],
    ['backend', TARGETS.coldStartBackendMs, 'backend-cloud-run', ' as on Cloud Run'],
  ] as const) {
    const cold = results.coldStart.cases.find((c) => c.id === id);
    checks.push({
      target: `cold start${where}, ${role} role, median <= ${limit} ms`,
      measured: cold
        ? `${cold.medianMs.toFixed(0)} ms (${cold.minMs.toFixed(0)}-${cold.maxMs.toFixed(0)})`
        : 'not measured',
      met: cold ? cold.medianMs <= limit : undefined,
    });
  }

  // Memory as shipped: the Dockerfile's NODE_OPTIONS, telemetry exported as on Cloud Run.
  const shipped = results.endToEnd.configs.find((c) => c.id === 'export')?.summary;
  const flags = results.settings.shippedNodeOptions ?? 'none';
  for (const role of ['api', 'backend'] as const) {
    const idle = shipped?.idleRssMiB[role];
    const peak = shipped?.peakRssMiB[role];
    checks.push({
      target: `idle RSS, ${role} role <= ${TARGETS.idleRssMiB} MiB`,
      measured: idle === undefined ? 'not measured' : `${idle.toFixed(0)} MiB`,
      met: idle === undefined ? undefined : idle <= TARGETS.idleRssMiB,
    });
    checks.push({
      target: `peak RSS under load, ${role} role <= ${TARGETS.peakRssMiB} MiB (NODE_OPTIONS: ${flags})`,
      measured: peak === undefined ? 'not measured' : `${peak.toFixed(0)} MiB`,
      met: peak === undefined ? undefined : peak <= TARGETS.peakRssMiB,
    });
  }

  const runs = results.endToEnd.runs.length + results.grpc.runs.length;
  const errors =
    results.endToEnd.runs.reduce((total, run) => total + run.wrk.errors, 0) +
    results.grpc.runs.reduce((total, run) => total + run.h2load.errors, 0);
  checks.push({
    target: 'errors under load = 0',
    measured: String(errors),
    met: runs > 0 ? errors === 0 : undefined,
  });
  return checks;
}
