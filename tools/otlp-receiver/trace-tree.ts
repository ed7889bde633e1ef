import type { AttributeValue, ReceivedSpan } from './types.ts';

export const DEFAULT_KEY_ATTRIBUTES: readonly string[] = [
  'http.response.status_code',
  'rpc.status_code',
  'enduser.id',
  'error.type',
];

export interface TraceTreeOptions {
  /** ANSI colours; default false. */
  color?: boolean;
  /** Attributes shown after each line when present; default DEFAULT_KEY_ATTRIBUTES. */
  keyAttributes?: readonly string[];
  /** Appended to each trace's header line. */
  note?: string;
}

const ORPHAN = '(parent not received)';

type Paint = (code: string, text: string) => string;
const ansi: Paint = (code, text) => (text === '' ? text : `\x1b[${code}m${text}\x1b[0m`);
const plain: Paint = (_code, text) => text;
const DIM = '2';
const BOLD = '1';
const RED = '31';
const GREEN = '32';
const YELLOW = '33';
const CYAN = '36';

interface Row {
  readonly prefix: string;
  readonly span: ReceivedSpan;
  readonly orphan: boolean;
  /** Prefix for lines under this row (its exception events). */
  readonly childPrefix: string;
}

const byStart = (a: ReceivedSpan, b: ReceivedSpan) =>
  a.startTimeUnixNano < b.startTimeUnixNano
    ? -1
    : a.startTimeUnixNano > b.startTimeUnixNano
      ? 1
      : a.name.localeCompare(b.name);

function formatValue(value: AttributeValue | undefined): string {
  if (typeof value === 'string')
    return /\s/.test(value) || value === '' ? JSON.stringify(value) : value;
  if (value instanceof Uint8Array) return `0x${Buffer.from(value).toString('hex')}`;
  return JSON.stringify(value) ?? 'undefined';
}

export function formatDuration(ms: number): string {
  return `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
}

/** Parent-before-child order with tree prefixes; spans never reached (cycles) end as orphans. */
function layout(spans: readonly ReceivedSpan[]): Row[] {
  const byId = new Map(spans.map((span) => [span.spanId, span]));
  const children = new Map<string, ReceivedSpan[]>();
  const roots: ReceivedSpan[] = [];
  for (const span of byId.values()) {
    const parent = span.parentSpanId;
    if (parent !== undefined && byId.has(parent) && parent !== span.spanId) {
      const list = children.get(parent);
      if (list) list.push(span);
      else children.set(parent, [span]);
    } else {
      roots.push(span);
    }
  }
  const rows: Row[] = [];
  const visited = new Set<string>();
  const visit = (span: ReceivedSpan, prefix: string, childPrefix: string, orphan: boolean) => {
    visited.add(span.spanId);
    rows.push({ prefix, span, orphan, childPrefix });
    const kids = (children.get(span.spanId) ?? []).sort(byStart);
    kids.forEach((kid, i) => {
      const last = i === kids.length - 1;
      visit(kid, childPrefix + (last ? '└─ ' : '├─ '), childPrefix + (last ? '   ' : '│  '), false);
    });
  };
  for (const root of roots.sort(byStart)) visit(root, '', '', root.parentSpanId !== undefined);
  for (const span of [...byId.values()].sort(byStart)) {
    if (!visited.has(span.spanId)) visit(span, '', '', true);
  }
  return rows;
}

function formatOneTrace(spans: readonly ReceivedSpan[], options: TraceTreeOptions): string {
  const paint = options.color ? ansi : plain;
  const keys = options.keyAttributes ?? DEFAULT_KEY_ATTRIBUTES;
  const rows = layout(spans);
  const cells = rows.map(({ prefix, span, orphan }) => ({
    name: `${prefix}${span.name}${orphan ? `  ${ORPHAN}` : ''}`,
    service: String(span.resource['service.name'] ?? '?'),
    kind: span.kind,
    duration: formatDuration(span.durationMs),
    status: span.status.code,
  }));
  const width = (pick: (c: (typeof cells)[number]) => string) =>
    Math.max(0, ...cells.map((c) => [...pick(c)].length));
  const w = {
    name: width((c) => c.name),
    service: width((c) => c.service),
    kind: width((c) => c.kind),
    duration: width((c) => c.duration),
    status: width((c) => c.status),
  };
  const pad = (text: string, to: number) => text + ' '.repeat(Math.max(0, to - [...text].length));

  const first = Math.min(...spans.map((s) => Number(s.startTimeUnixNano / 1000n)));
  const last = Math.max(...spans.map((s) => Number(s.endTimeUnixNano / 1000n)));
  const traceId = spans[0]?.traceId ?? '?';
  const header =
    `${paint(BOLD, `trace ${traceId}`)}  ${spans.length} span${spans.length === 1 ? '' : 's'}` +
    `  ${formatDuration((last - first) / 1000)}${options.note ? `  ${options.note}` : ''}`;

  const lines = [header];
  rows.forEach((row, i) => {
    const c = cells[i] as (typeof cells)[number];
    const { span } = row;
    const name = pad(c.name, w.name);
    const paintedName =
      paint(DIM, row.prefix) +
      (row.orphan
        ? `${span.name}  ${paint(YELLOW, ORPHAN)}${name.slice(c.name.length)}`
        : name.slice(row.prefix.length));
    const statusColour =
      span.status.code === 'ERROR' ? RED : span.status.code === 'OK' ? GREEN : DIM;
    const details = keys
      .filter((key) => key in span.attributes)
      .map((key) => `${key}=${formatValue(span.attributes[key])}`);
    if (span.status.message) details.push(`status.message=${JSON.stringify(span.status.message)}`);
    lines.push(
      [
        paintedName,
        paint(CYAN, pad(c.service, w.service)),
        paint(DIM, pad(c.kind, w.kind)),
        ' '.repeat(w.duration - c.duration.length) + c.duration,
        paint(statusColour, pad(c.status, w.status)),
        details.join(' '),
      ]
        .join('  ')
        .trimEnd(),
    );
    for (const event of span.events.filter((e) => e.name === 'exception')) {
      const type = event.attributes['exception.type'];
      const message = event.attributes['exception.message'];
      const text = [type, message]
        .filter((v) => v !== undefined)
        .map(String)
        .join(': ');
      lines.push(`${paint(DIM, row.childPrefix)}   ${paint(RED, `! exception ${text}`)}`);
    }
  });
  return lines.join('\n');
}

/**
 * One tree per trace (a trace-id header, then spans under their parents by start time):
 * `name  service.name  kind  duration  status  key attributes`. Spans whose parent is not among
 * `spans` sit at the top level marked "(parent not received)". Several traces are separated by
 * a blank line.
 */
export function formatTraceTree(
  spans: readonly ReceivedSpan[],
  options: TraceTreeOptions = {},
): string {
  const traces = new Map<string, ReceivedSpan[]>();
  for (const span of [...spans].sort(byStart)) {
    const list = traces.get(span.traceId);
    if (list) list.push(span);
    else traces.set(span.traceId, [span]);
  }
  return [...traces.values()].map((trace) => formatOneTrace(trace, options)).join('\n\n');
}

export interface TraceTreePrinterOptions extends Omit<TraceTreeOptions, 'note'> {
  /** Print a trace once it has had no new span for this long; default 300. */
  quietMs?: number;
  write: (text: string) => void;
  /** Printed traces remembered so late spans reprint the whole tree; default 1000. */
  rememberTraces?: number;
}

export interface TraceTreePrinter {
  /** Pass to `receiver.onSpans`. */
  readonly add: (spans: readonly ReceivedSpan[]) => void;
  /** Prints every trace still waiting for its quiet period. */
  flush(): void;
  /** Stops the timers without printing. */
  close(): void;
}

interface PendingTrace {
  spans: ReceivedSpan[];
  printed: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Groups arriving spans by trace and prints each trace's tree once it has been quiet for
 * `quietMs`. Spans arriving after their trace was printed (each service exports on its own
 * schedule) reprint the whole tree, noted "(updated: +N spans)".
 */
export function createTraceTreePrinter(options: TraceTreePrinterOptions): TraceTreePrinter {
  const quietMs = options.quietMs ?? 300;
  const remember = options.rememberTraces ?? 1_000;
  const traces = new Map<string, PendingTrace>();
  const treeOptions = {
    color: options.color ?? false,
    keyAttributes: options.keyAttributes ?? DEFAULT_KEY_ATTRIBUTES,
  };

  const print = (traceId: string, trace: PendingTrace) => {
    clearTimeout(trace.timer);
    trace.timer = undefined;
    const late = trace.spans.length - trace.printed;
    if (late === 0) return;
    const note = trace.printed > 0 ? `(updated: +${late} span${late === 1 ? '' : 's'})` : '';
    trace.printed = trace.spans.length;
    options.write(`${formatTraceTree(trace.spans, { ...treeOptions, note })}\n\n`);
    // Re-insert so the Map's order is least recently printed first.
    traces.delete(traceId);
    traces.set(traceId, trace);
    for (const [oldId, old] of traces) {
      if (traces.size <= remember) break;
      if (old.timer === undefined) traces.delete(oldId);
    }
  };

  return {
    add: (spans) => {
      for (const span of spans) {
        let trace = traces.get(span.traceId);
        if (!trace) {
          trace = { spans: [], printed: 0, timer: undefined };
          traces.set(span.traceId, trace);
        }
        const duplicate = trace.spans.findIndex((s) => s.spanId === span.spanId);
        if (duplicate >= 0) trace.spans.splice(duplicate, 1);
        trace.spans.push(span);
      }
      for (const traceId of new Set(spans.map((span) => span.traceId))) {
        const trace = traces.get(traceId) as PendingTrace;
        clearTimeout(trace.timer);
        trace.timer = setTimeout(() => print(traceId, trace), quietMs);
        trace.timer.unref();
      }
    },
    flush: () => {
      for (const [traceId, trace] of [...traces]) {
        if (trace.timer !== undefined) print(traceId, trace);
      }
    },
    close: () => {
      for (const trace of traces.values()) clearTimeout(trace.timer);
      traces.clear();
    },
  };
}
