// Output of guest runs: which run a `banger/output` notification belongs
// to, and how runs are written to the output channel and to a terminal.
// Pure: no `vscode` import.

export type Stream = 'stdout' | 'stderr';

/** Where one run's output goes. */
export interface Sink {
  write(stream: Stream, text: string): void;
}

/**
 * Routes `banger/output` to the request that caused it.
 *
 * The server names each run (`runId`) but the client learns the id only
 * from the result, which comes after all the output. While exactly one
 * request that runs something is pending, new output can only be its own,
 * so it streams straight to that request's sink. With several pending, a
 * new run's output is held until a result names its run (or until only
 * one request is left to own it), and output no request claims goes to
 * the fallback sink: nothing is lost or shown in the wrong place.
 */
export class RunRouter {
  private next = 1;
  private readonly pending = new Map<number, { sink: Sink; runId?: string }>();
  /** Output of runs no request has claimed yet. `suspect`: a request that
   * failed without naming its run may have been its owner, so only a
   * result naming the run claims it. */
  private readonly held = new Map<string, { chunks: Array<[Stream, string]>; suspect: boolean }>();

  constructor(private readonly fallback: Sink) {}

  /** A request that will run one guest command was sent; returns its ticket. */
  begin(sink: Sink): number {
    const ticket = this.next++;
    this.pending.set(ticket, { sink });
    return ticket;
  }

  /** A `banger/output` notification. */
  output(runId: string, stream: Stream, text: string): void {
    for (const p of this.pending.values()) {
      if (p.runId === runId) {
        p.sink.write(stream, text);
        return;
      }
    }
    const held = this.held.get(runId);
    if (held) {
      held.chunks.push([stream, text]);
      return;
    }
    const unclaimed = this.unclaimed();
    if (unclaimed.length === 1 && this.claimable().length === 0) {
      unclaimed[0].runId = runId;
      unclaimed[0].sink.write(stream, text);
    } else if (unclaimed.length === 0) {
      this.fallback.write(stream, text);
    } else {
      this.held.set(runId, { chunks: [[stream, text]], suspect: false });
    }
  }

  /** The request ended: `runId` from its result, or undefined on an error. */
  end(ticket: number, runId?: string): void {
    const p = this.pending.get(ticket);
    if (!p) {
      return;
    }
    this.pending.delete(ticket);
    if (runId !== undefined && p.runId === undefined) {
      this.flush(runId, p.sink);
    } else if (runId === undefined && p.runId === undefined) {
      for (const h of this.held.values()) {
        h.suspect = true;
      }
    }
    const unclaimed = this.unclaimed();
    const claimable = this.claimable();
    if (unclaimed.length === 1 && claimable.length === 1) {
      unclaimed[0].runId = claimable[0];
      this.flush(claimable[0], unclaimed[0].sink);
    } else if (unclaimed.length === 0) {
      for (const id of [...this.held.keys()]) {
        this.flush(id, this.fallback);
      }
    }
  }

  private unclaimed() {
    return [...this.pending.values()].filter((p) => p.runId === undefined);
  }

  private claimable(): string[] {
    return [...this.held].filter(([, h]) => !h.suspect).map(([id]) => id);
  }

  private flush(runId: string, sink: Sink): void {
    const held = this.held.get(runId);
    this.held.delete(runId);
    for (const [stream, text] of held?.chunks ?? []) {
      sink.write(stream, text);
    }
  }
}

/** Text for a terminal: bare `\n` becomes `\r\n`. */
export function toTerminal(text: string): string {
  return text.replace(/\r?\n/g, '\r\n');
}

/** stderr in red in a terminal, stdout as is. */
export function terminalChunk(stream: Stream, text: string): string {
  const t = toTerminal(text);
  return stream === 'stderr' && t !== '' ? `\x1b[31m${t}\x1b[0m` : t;
}

/** How a guest command ended, in words (128+N is signal N, as in a shell). */
export function describeExit(code: number): string {
  if (code > 128 && code < 128 + 65) {
    return `exit code ${code} (killed by signal ${code - 128})`;
  }
  return `exit code ${code}`;
}

/** The line a terminal shows when its command ended. */
export function terminalExitLine(code: number): string {
  const color = code === 0 ? '\x1b[32m' : '\x1b[31m';
  return `\r\n${color}[${describeExit(code)}]\x1b[0m\r\n\x1b[2mPress any key to close the terminal.\x1b[0m\r\n`;
}

/** `banger.runTests`'s result. */
export interface TestResult {
  runId: string;
  exitCode: number;
  passed: number | null;
  failed: number | null;
  durationMs: number;
}

export function parseTestResult(raw: unknown): TestResult | undefined {
  if (typeof raw !== 'object' || raw === null) {
    return undefined;
  }
  const r = raw as Record<string, unknown>;
  if (typeof r.runId !== 'string' || typeof r.exitCode !== 'number') {
    return undefined;
  }
  const count = (v: unknown) => (typeof v === 'number' ? v : null);
  return {
    runId: r.runId,
    exitCode: r.exitCode,
    passed: count(r.passed),
    failed: count(r.failed),
    durationMs: typeof r.durationMs === 'number' ? r.durationMs : 0,
  };
}

export function formatDuration(ms: number): string {
  if (ms < 1000) {
    return `${ms} ms`;
  }
  if (ms < 60_000) {
    return `${(ms / 1000).toFixed(1)} s`;
  }
  const m = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return `${m} min ${s} s`;
}

/** One line on a test run's outcome, for the output channel and messages. */
export function testSummary(r: TestResult): string {
  const counts: string[] = [];
  if (r.passed !== null) {
    counts.push(`${r.passed} passed`);
  }
  if (r.failed !== null) {
    counts.push(`${r.failed} failed`);
  }
  const verdict = r.exitCode === 0 ? 'Tests passed' : `Tests failed (${describeExit(r.exitCode)})`;
  return `${verdict}${counts.length ? ', ' + counts.join(', ') : ''}, in ${formatDuration(r.durationMs)}`;
}

/** `[HH:MM:SS] text`, the output channel's line prefix. */
export function stamped(text: string, now: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `[${p(now.getHours())}:${p(now.getMinutes())}:${p(now.getSeconds())}] ${text}`;
}
