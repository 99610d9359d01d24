// What the status bar item shows, from `banger/status` (docs/lsp.md) and
// the client's own state. Pure: no `vscode` import, unit-tested with node.

/** `banger/status` as the server sends it. */
export interface BangerStatus {
  vm: string;
  vmState: string;
  sync: string;
  message?: string;
  guestChanges: number;
  filesSent: number;
}

/** The language client's own state, before or instead of a server status. */
export type ClientPhase = 'starting' | 'running' | 'failed' | 'stopped';

export type Severity = 'ok' | 'busy' | 'warning' | 'error';

export interface StatusView {
  /** The item's text, with `$(codicon)` icons. */
  text: string;
  /** Plain-text tooltip, one fact a line. */
  tooltip: string;
  /** What a screen reader says. */
  label: string;
  severity: Severity;
}

const SYNC_ICON: Record<string, string> = {
  synced: '$(check)',
  syncing: '$(sync~spin)',
  conflict: '$(warning)',
  error: '$(error)',
};

const SYNC_SEVERITY: Record<string, Severity> = {
  synced: 'ok',
  syncing: 'busy',
  conflict: 'warning',
  error: 'error',
};

function plural(n: number, one: string, many = one + 's'): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Parses a `banger/status` payload; `undefined` when it is not one. */
export function parseStatus(raw: unknown): BangerStatus | undefined {
  if (typeof raw !== 'object' || raw === null) {
    return undefined;
  }
  const r = raw as Record<string, unknown>;
  if (typeof r.vm !== 'string' || typeof r.vmState !== 'string' || typeof r.sync !== 'string') {
    return undefined;
  }
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  return {
    vm: r.vm,
    vmState: r.vmState,
    sync: r.sync,
    message: typeof r.message === 'string' && r.message !== '' ? r.message : undefined,
    guestChanges: num(r.guestChanges),
    filesSent: num(r.filesSent),
  };
}

/**
 * The status bar item for a client phase and the last server status.
 * `detail` is the reason when the phase is `failed`.
 */
export function statusView(
  phase: ClientPhase,
  status: BangerStatus | undefined,
  detail?: string,
): StatusView {
  const click = 'Click to show the sandbox output.';
  if (phase === 'failed') {
    return {
      text: '$(error) banger',
      tooltip: `banger is not running: ${detail ?? 'the language server stopped'}\n${click}`,
      label: 'banger is not running',
      severity: 'error',
    };
  }
  if (phase === 'stopped') {
    return { text: '$(circle-slash) banger', tooltip: `banger is stopped.\n${click}`, label: 'banger is stopped', severity: 'warning' };
  }
  if (status && status.vm === '' && status.sync === 'error') {
    // Failed before it could name the VM (no daemon, no repository).
    return {
      text: '$(error) banger',
      tooltip: `banger: ${status.message ?? 'error'}\n${click}`,
      label: `banger error: ${status.message ?? 'error'}`,
      severity: 'error',
    };
  }
  if (!status || status.vm === '') {
    return {
      text: '$(sync~spin) banger',
      tooltip: `banger is starting: finding this repository's sandbox.\n${click}`,
      label: 'banger is starting',
      severity: 'busy',
    };
  }
  const icon = SYNC_ICON[status.sync] ?? '$(question)';
  let text = `$(vm) ${status.vm}: ${status.vmState} ${icon} ${status.sync}`;
  if (status.guestChanges > 0) {
    text += ` $(cloud-download) ${status.guestChanges}`;
  }
  const lines = [
    `Sandbox VM: ${status.vm} (${status.vmState === 'absent' ? 'not created yet; the first command creates it' : status.vmState})`,
    `Sync: ${status.sync}${status.sync === 'synced' && status.filesSent > 0 ? ` (${plural(status.filesSent, 'file')} sent by the last sync)` : ''}`,
  ];
  if (status.guestChanges > 0) {
    lines.push(
      `The sandbox changed ${plural(status.guestChanges, 'file')}: run "Banger: Apply Guest Changes" to bring them here.`,
    );
  }
  if (status.message) {
    lines.push(status.message);
  }
  lines.push(click);
  let severity = SYNC_SEVERITY[status.sync] ?? 'warning';
  if (severity === 'ok' && status.vmState !== 'running' && status.vmState !== 'absent' && status.vmState !== 'stopped') {
    severity = 'busy';
  }
  let label = `banger sandbox ${status.vm}: ${status.vmState}, ${status.sync}`;
  if (status.guestChanges > 0) {
    label += `, ${plural(status.guestChanges, 'file')} changed in the sandbox`;
  }
  return { text, tooltip: lines.join('\n'), label, severity };
}
