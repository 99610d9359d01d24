// The banger extension: starts `banger lsp` (docs/lsp.md) for the open git
// repository and gives its commands a face: palette commands, a status bar
// item, an output channel, a terminal for guest commands. The server does
// the work (sandbox, sync, diagnostics, guest edits); this file only wires
// VS Code to it. Decisions that need no VS Code live in status.ts,
// settings.ts and output.ts, which have unit tests.

import * as path from 'node:path';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import {
  CancellationToken,
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LSPErrorCodes,
  ResponseError,
  RevealOutputChannelOn,
  State,
  type ApplyWorkspaceEditParams,
  type ApplyWorkspaceEditResult,
  type HandlerResult,
  type LanguageClientOptions,
  type ServerOptions,
  type StaticFeature,
  type DynamicFeature,
} from 'vscode-languageclient/node';

import { expectations, needsConfirmation, unmet, type LspWorkspaceEdit } from './edits';
import { parseStatus, statusView, type BangerStatus, type ClientPhase } from './status';
import { readSettings, serverOptions, needsRestart, type ExtensionSettings } from './settings';
import {
  RunRouter,
  parseTestResult,
  stamped,
  terminalChunk,
  terminalExitLine,
  testSummary,
  toTerminal,
  type Sink,
  type Stream,
} from './output';

/**
 * The language client, without its own registration of the server's
 * commands: the extension registers those ids itself (so the palette
 * commands exist, with clear errors, even when the server is not running),
 * and sends `workspace/executeCommand` from them.
 */
class BangerLanguageClient extends LanguageClient {
  override registerFeature(feature: StaticFeature | DynamicFeature<unknown>): void {
    const method = (feature as { registrationType?: { method?: string } }).registrationType?.method;
    if (method === ExecuteCommandRequest.method) {
      return;
    }
    super.registerFeature(feature);
  }
}

/** A document URI an LSP workspace edit touches (text edits, creates). */
function editedUris(edit: ApplyWorkspaceEditParams['edit']): string[] {
  const uris: string[] = [];
  for (const change of edit.documentChanges ?? []) {
    if ('textDocument' in change) {
      uris.push(change.textDocument.uri);
    } else if (change.kind === 'create') {
      uris.push(change.uri);
    } else if (change.kind === 'rename') {
      uris.push(change.newUri);
    }
  }
  uris.push(...Object.keys(edit.changes ?? {}));
  return uris;
}

class Banger implements vscode.Disposable {
  private readonly output = vscode.window.createOutputChannel('banger');
  private readonly log = vscode.window.createOutputChannel('banger (language server)', { log: true });
  private readonly item = vscode.window.createStatusBarItem('banger.status', vscode.StatusBarAlignment.Left, 50);
  private readonly disposables: vscode.Disposable[] = [];
  private readonly router: RunRouter;
  private client: LanguageClient | undefined;
  private phase: ClientPhase = 'starting';
  private failure: string | undefined;
  private status: BangerStatus | undefined;
  private settings: ExtensionSettings;
  private daemonWarned = false;
  private lastExec = '';
  private restarting: Promise<void> = Promise.resolve();
  /** Whether the output channel's last write ended a line. */
  private atLineStart = true;

  constructor(private readonly folder: vscode.WorkspaceFolder) {
    this.settings = this.readSettings();
    this.router = new RunRouter(this.channelSink());
    this.item.name = 'banger sandbox';
    this.item.command = 'banger.showOutput';
    this.render();
    this.item.show();
    this.disposables.push(
      this.output,
      this.log,
      this.item,
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration('banger')) {
          void this.settingsChanged();
        }
      }),
      vscode.workspace.onDidGrantWorkspaceTrust(() => void this.trustGranted()),
    );
  }

  dispose(): void {
    void this.shutdown();
  }

  /** Stops `banger lsp` (the sandbox keeps running) and lets go of the UI. */
  async shutdown(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    await client?.stop().catch(() => undefined);
    for (const d of this.disposables.splice(0)) {
      d.dispose();
    }
  }

  // --- settings and trust ---------------------------------------------------

  private readSettings(): ExtensionSettings {
    const config = vscode.workspace.getConfiguration('banger', this.folder.uri);
    const { settings, problems } = readSettings((k) => config.get(k));
    for (const p of problems) {
      void vscode.window.showWarningMessage(p.message, 'Open Settings').then((a) => {
        if (a) {
          void vscode.commands.executeCommand('workbench.action.openSettings', p.setting);
        }
      });
    }
    return settings;
  }

  private initOptions() {
    return serverOptions(this.settings, vscode.workspace.isTrusted);
  }

  private async settingsChanged(): Promise<void> {
    const before = this.settings;
    this.settings = this.readSettings();
    if (needsRestart(before, this.settings) || !this.client?.isRunning()) {
      await this.restart();
    } else {
      await this.client.sendNotification(DidChangeConfigurationNotification.type, { settings: this.initOptions() });
    }
  }

  private async trustGranted(): Promise<void> {
    if (this.client?.isRunning()) {
      await this.client.sendNotification(DidChangeConfigurationNotification.type, { settings: this.initOptions() });
    } else {
      await this.restart();
    }
    if (fs.existsSync(path.join(this.folder.uri.fsPath, '.banger.toml'))) {
      void vscode.window.showInformationMessage(
        'banger: the workspace is trusted now, so the test command in .banger.toml is used.',
      );
    }
  }

  // --- the language server --------------------------------------------------

  async start(): Promise<void> {
    this.phase = 'starting';
    this.failure = undefined;
    this.status = undefined;
    this.daemonWarned = false;
    this.render();
    const server: ServerOptions = {
      command: this.settings.path,
      args: ['lsp'],
      options: { cwd: this.folder.uri.fsPath },
    };
    const options: LanguageClientOptions = {
      // Every file of the repository: the server keeps open documents'
      // text (edits are versioned against it) and syncs saves.
      documentSelector: [{ scheme: 'file', pattern: `${this.folder.uri.fsPath}/**` }],
      workspaceFolder: this.folder,
      initializationOptions: () => this.initOptions(),
      outputChannel: this.log,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      // No retry: start() then fails, and says why.
      initializationFailedHandler: () => false,
      middleware: {
        workspace: {
          handleApplyEdit: (params, next) => this.applyEdit(params, next),
        },
      },
    };
    const client = new BangerLanguageClient('banger', 'banger', server, options);
    this.client = client;
    client.onNotification('banger/status', (raw: unknown) => this.onStatus(raw));
    client.onNotification('banger/output', (raw: { runId?: unknown; stream?: unknown; text?: unknown }) => {
      if (typeof raw?.runId === 'string' && typeof raw.text === 'string') {
        this.router.output(raw.runId, raw.stream === 'stderr' ? 'stderr' : 'stdout', raw.text);
      }
    });
    client.onDidChangeState((e) => {
      if (client !== this.client) {
        return;
      }
      if (e.newState === State.Running) {
        this.phase = 'running';
      } else if (e.newState === State.Stopped && this.phase === 'running') {
        this.phase = 'failed';
        this.failure ??= 'the language server stopped';
      }
      this.render();
    });
    try {
      await client.start();
    } catch (e) {
      if (client === this.client) {
        this.failed(this.startFailure(e));
      }
    }
  }

  private startFailure(e: unknown): string {
    const text = e instanceof Error ? e.message : String(e);
    if (/ENOENT/.test(text)) {
      return `banger was not found ("${this.settings.path}"). Install banger, or set "banger.path" to its full path.`;
    }
    if (/EACCES/.test(text)) {
      return `banger at "${this.settings.path}" is not executable. Check "banger.path".`;
    }
    return `banger lsp could not start: ${text}`;
  }

  private failed(message: string): void {
    this.phase = 'failed';
    this.failure = message;
    this.render();
    this.writeLine(message);
    void this.notifyError(message);
  }

  /** Restarts `banger lsp`; restarts asked for meanwhile run one after another. */
  restart(): Promise<void> {
    this.restarting = this.restarting.then(async () => {
      const old = this.client;
      this.client = undefined;
      if (old) {
        await old.stop().catch(() => undefined);
      }
      await this.start();
    });
    return this.restarting;
  }

  /**
   * `workspace/applyEdit`: VS Code applies it (with its Refactor Preview
   * when the edit needs confirmation, as "Apply guest changes" does); then
   * the extension checks the edit was taken whole (see edits.ts) and saves
   * what it changed.
   */
  private async applyEdit(
    params: ApplyWorkspaceEditParams,
    next: (params: ApplyWorkspaceEditParams, token: CancellationToken) => HandlerResult<ApplyWorkspaceEditResult, void>,
  ): Promise<ApplyWorkspaceEditResult | ResponseError<void>> {
    const edit = params.edit as LspWorkspaceEdit;
    const confirm = needsConfirmation(edit);
    if (confirm) {
      void vscode.window.showInformationMessage(
        'banger: review the sandbox\'s changes in the Refactor Preview. Tick the files (all of them: banger takes the changes together), then press Apply; Discard takes none.',
      );
    }
    const result = await next(params, CancellationToken.None);
    if (result instanceof ResponseError || !result.applied) {
      return result;
    }
    if (confirm) {
      const missing = unmet(
        expectations(edit),
        (u) => {
          const uri = vscode.Uri.parse(u);
          const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === uri.toString());
          if (doc) {
            return doc.getText();
          }
          try {
            return fs.readFileSync(uri.fsPath, 'utf8');
          } catch {
            return undefined;
          }
        },
        (u) => fs.existsSync(vscode.Uri.parse(u).fsPath),
      );
      if (missing.length > 0) {
        const names = missing.map((e) => path.relative(this.folder.uri.fsPath, vscode.Uri.parse(e.uri).fsPath)).join(', ');
        const reason = `only part of the guest changes was ticked (not ${names}); banger takes them all or none. Undo what was applied (Ctrl+Z), then run "Banger: Apply Guest Changes" again and tick every file`;
        this.writeLine(reason);
        return { applied: false, failureReason: reason };
      }
    }
    await this.saveEdited(params);
    return result;
  }

  /**
   * After an accepted "Apply guest changes" edit, saves what it changed.
   * The server has recorded the guest's copies as synced, so the host
   * files must hold them too: a file left unsaved would send its old disk
   * content back over the guest's on the next full sync. (VS Code's own
   * `files.refactoring.autoSave` saves only multi-file refactorings.)
   */
  private async saveEdited(params: ApplyWorkspaceEditParams): Promise<void> {
    const wanted = new Set(editedUris(params.edit).map((u) => vscode.Uri.parse(u).toString()));
    const dirty = vscode.workspace.textDocuments.filter((d) => d.isDirty && wanted.has(d.uri.toString()));
    const results = await Promise.all(dirty.map((d) => d.save()));
    results.forEach((saved, i) => {
      if (!saved) {
        this.writeLine(`could not save ${dirty[i].uri.fsPath} after applying the guest's changes`);
      }
    });
  }

  private onStatus(raw: unknown): void {
    const s = parseStatus(raw);
    if (!s) {
      return;
    }
    this.status = s;
    this.render();
    if (s.sync === 'error' && s.message && /bangerd/.test(s.message) && !this.daemonWarned) {
      this.daemonWarned = true;
      this.writeLine(`the banger daemon cannot be reached: ${s.message}`);
      void this.notifyError(`banger: the daemon (bangerd) cannot start or be reached: ${s.message}`);
    }
  }

  private render(): void {
    const v = statusView(this.phase, this.status, this.failure);
    this.item.text = v.text;
    this.item.tooltip = v.tooltip;
    this.item.accessibilityInformation = { label: v.label };
    this.item.backgroundColor =
      v.severity === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : v.severity === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  }

  // --- output -----------------------------------------------------------------

  private channelSink(): Sink {
    return {
      write: (_stream: Stream, text: string) => {
        if (text !== '') {
          this.output.append(text);
          this.atLineStart = text.endsWith('\n');
        }
      },
    };
  }

  private writeLine(text: string): void {
    if (!this.atLineStart) {
      this.output.append('\n');
    }
    this.output.appendLine(stamped(text, new Date()));
    this.atLineStart = true;
  }

  private async notifyError(message: string): Promise<void> {
    const actions = ['Show Output'];
    if (/banger\.path/.test(message)) {
      actions.push('Open Settings');
    }
    if (!vscode.workspace.isTrusted && /untrusted/.test(message)) {
      actions.push('Manage Workspace Trust');
    }
    const choice = await vscode.window.showErrorMessage(message, ...actions);
    if (choice === 'Show Output') {
      this.output.show(true);
    } else if (choice === 'Open Settings') {
      void vscode.commands.executeCommand('workbench.action.openSettings', 'banger.path');
    } else if (choice === 'Manage Workspace Trust') {
      void vscode.commands.executeCommand('workbench.trust.manage');
    }
  }

  // --- commands ---------------------------------------------------------------

  /** The running client, or undefined after telling the user why not. */
  private ready(): LanguageClient | undefined {
    if (this.client?.isRunning()) {
      return this.client;
    }
    void this.notifyError(
      this.phase === 'starting'
        ? 'banger is still starting; try again in a moment.'
        : `banger is not running: ${this.failure ?? 'the language server stopped'}`,
    );
    return undefined;
  }

  private command(name: string, args: unknown[], token?: vscode.CancellationToken): Promise<unknown> {
    const client = this.client;
    if (!client) {
      return Promise.reject(new Error('banger is not running'));
    }
    return client.sendRequest(ExecuteCommandRequest.type, { command: name, arguments: args }, token);
  }

  private commandError(what: string, e: unknown): void {
    const text = e instanceof Error ? e.message : String(e);
    let message = `banger: ${what} failed: ${text}`;
    this.writeLine(message);
    if (!vscode.workspace.isTrusted && /test command/.test(text)) {
      message += ' (This workspace is untrusted: the test command in .banger.toml is not used until you trust it.)';
    }
    void this.notifyError(message);
  }

  private vmName(): string {
    return this.status?.vm || 'sandbox';
  }

  async runTests(arg?: unknown): Promise<void> {
    const client = this.ready();
    if (!client) {
      return;
    }
    const filter =
      typeof arg === 'object' && arg !== null && typeof (arg as { filter?: unknown }).filter === 'string'
        ? (arg as { filter: string }).filter
        : undefined;
    this.writeLine(`Run tests in sandbox ${this.vmName()}${filter ? ` (filter: ${filter})` : ''}`);
    this.output.show(true);
    const ticket = this.router.begin(this.channelSink());
    try {
      const raw = await this.command('banger.runTests', filter ? [{ filter }] : []);
      const r = parseTestResult(raw);
      this.router.end(ticket, r?.runId);
      if (!r) {
        this.writeLine(`unexpected result from banger.runTests: ${JSON.stringify(raw)}`);
        return;
      }
      const summary = testSummary(r);
      this.writeLine(summary);
      if (r.exitCode === 0) {
        vscode.window.setStatusBarMessage(`$(pass) banger: ${summary}`, 10_000);
      } else {
        const choice = await vscode.window.showWarningMessage(`banger: ${summary}`, 'Show Problems', 'Show Output');
        if (choice === 'Show Problems') {
          void vscode.commands.executeCommand('workbench.actions.view.problems');
        } else if (choice === 'Show Output') {
          this.output.show(true);
        }
      }
    } catch (e) {
      this.router.end(ticket);
      this.commandError('running the tests', e);
    }
  }

  async exec(): Promise<void> {
    if (!this.ready()) {
      return;
    }
    const line = await vscode.window.showInputBox({
      title: 'Banger: Exec in Sandbox',
      prompt: `A command line to run in the sandbox ${this.vmName()} (with sh -c, in the workspace /root/repo)`,
      placeHolder: 'for example: ls -la && git status',
      value: this.lastExec,
      ignoreFocusOut: true,
    });
    if (line === undefined || line.trim() === '') {
      return;
    }
    this.lastExec = line;
    const pty = new ExecTerminal(line, this);
    const terminal = vscode.window.createTerminal({ name: `banger: ${line}`, pty, iconPath: new vscode.ThemeIcon('vm') });
    terminal.show();
  }

  /** Runs `argv` through banger.exec; output goes to `sink` as it comes. */
  async runInSandbox(argv: string[], sink: Sink, token: vscode.CancellationToken): Promise<number> {
    const ticket = this.router.begin(sink);
    try {
      const r = (await this.command('banger.exec', [{ argv }], token)) as { runId?: unknown; exitCode?: unknown };
      this.router.end(ticket, typeof r?.runId === 'string' ? r.runId : undefined);
      return typeof r?.exitCode === 'number' ? r.exitCode : -1;
    } catch (e) {
      this.router.end(ticket);
      throw e;
    }
  }

  async applyGuestChanges(): Promise<void> {
    if (!this.ready()) {
      return;
    }
    try {
      const r = (await this.command('banger.applyGuestChanges', [])) as { files?: number };
      const n = r?.files ?? 0;
      const text =
        n === 0 ? 'banger: the sandbox has no changes to apply.' : `banger: applied ${n} file${n === 1 ? '' : 's'} from the sandbox ${this.vmName()}.`;
      this.writeLine(text);
      void vscode.window.showInformationMessage(text);
    } catch (e) {
      const text = e instanceof Error ? e.message : String(e);
      if (/declined/.test(text)) {
        this.writeLine('guest changes not applied: declined');
        void vscode.window.showInformationMessage('banger: the guest changes were not applied.');
      } else {
        this.commandError('applying the guest changes', e);
      }
    }
  }

  async overwriteGuest(): Promise<void> {
    if (!this.ready()) {
      return;
    }
    try {
      const r = (await this.command('banger.overwriteGuest', [])) as { files?: number };
      const text = `banger: sent ${r?.files ?? 0} file(s) over the sandbox's copies.`;
      this.writeLine(text);
      vscode.window.setStatusBarMessage(text, 10_000);
    } catch (e) {
      this.commandError('overwriting the guest copy', e);
    }
  }

  async sync(): Promise<void> {
    if (!this.ready()) {
      return;
    }
    try {
      const r = (await this.command('banger.sync', [])) as { files?: number };
      const n = r?.files ?? 0;
      const text = `banger: synced; ${n} file${n === 1 ? '' : 's'} sent to the sandbox.`;
      this.writeLine(text);
      vscode.window.setStatusBarMessage(`$(check) ${text}`, 10_000);
    } catch (e) {
      this.commandError('syncing', e);
    }
  }

  async stop(): Promise<void> {
    if (!this.ready()) {
      return;
    }
    const vm = this.vmName();
    try {
      await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `banger: stopping the sandbox ${vm}…` },
        () => this.command('banger.stop', []),
      );
      this.writeLine(`sandbox ${vm} stopped`);
      void vscode.window.showInformationMessage(`banger: the sandbox ${vm} is stopped; the next command starts it again.`);
    } catch (e) {
      this.commandError('stopping the sandbox', e);
    }
  }

  showOutput(): void {
    this.output.show();
  }
}

/** A terminal showing one guest command: its output as it comes, then how it ended. */
class ExecTerminal implements vscode.Pseudoterminal {
  private readonly writer = new vscode.EventEmitter<string>();
  private readonly closer = new vscode.EventEmitter<number | void>();
  private readonly cancel = new vscode.CancellationTokenSource();
  private done = false;
  readonly onDidWrite = this.writer.event;
  readonly onDidClose = this.closer.event;

  constructor(
    private readonly line: string,
    private readonly banger: Banger,
  ) {}

  open(): void {
    this.writer.fire(`\x1b[1m$ ${toTerminal(this.line)}\x1b[0m\r\n`);
    void this.run();
  }

  private async run(): Promise<void> {
    const sink: Sink = { write: (stream, text) => this.writer.fire(terminalChunk(stream, text)) };
    try {
      const code = await this.banger.runInSandbox(['sh', '-c', this.line], sink, this.cancel.token);
      this.writer.fire(terminalExitLine(code));
    } catch (e) {
      if (this.cancel.token.isCancellationRequested || (e instanceof ResponseError && e.code === LSPErrorCodes.RequestCancelled)) {
        this.writer.fire('\r\n\x1b[33m[cancelled: the command was killed in the sandbox]\x1b[0m\r\n');
      } else {
        const text = e instanceof Error ? e.message : String(e);
        this.writer.fire(`\r\n\x1b[31m[banger: ${toTerminal(text)}]\x1b[0m\r\n`);
      }
      this.writer.fire('\x1b[2mPress any key to close the terminal.\x1b[0m\r\n');
    } finally {
      this.done = true;
    }
  }

  handleInput(data: string): void {
    if (this.done) {
      this.closer.fire();
    } else if (data === '\x03') {
      this.writer.fire('^C');
      this.cancel.cancel();
    }
  }

  close(): void {
    if (!this.done) {
      this.cancel.cancel();
    }
    this.cancel.dispose();
  }
}

let banger: Banger | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const folder = vscode.workspace.workspaceFolders?.find((f) => f.uri.scheme === 'file');
  if (!folder) {
    return;
  }
  const b = new Banger(folder);
  banger = b;
  context.subscriptions.push(
    b,
    vscode.commands.registerCommand('banger.runTests', (arg?: unknown) => b.runTests(arg)),
    vscode.commands.registerCommand('banger.exec', () => b.exec()),
    vscode.commands.registerCommand('banger.applyGuestChanges', () => b.applyGuestChanges()),
    vscode.commands.registerCommand('banger.overwriteGuest', () => b.overwriteGuest()),
    vscode.commands.registerCommand('banger.sync', () => b.sync()),
    vscode.commands.registerCommand('banger.stop', () => b.stop()),
    vscode.commands.registerCommand('banger.showOutput', () => b.showOutput()),
  );
  await vscode.commands.executeCommand('setContext', 'banger.active', true);
  await b.start();
}

export async function deactivate(): Promise<void> {
  const b = banger;
  banger = undefined;
  await b?.shutdown();
}
