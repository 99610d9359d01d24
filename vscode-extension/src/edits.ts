// What an "Apply guest changes" workspace edit must leave behind, to tell
// whether VS Code applied all of it. Pure: no `vscode` import.
//
// The server sends the guest's changes as one edit whose operations all
// carry a change annotation with `needsConfirmation: true`. VS Code then
// shows its Refactor Preview with every change unticked, and applies only
// what the user ticks, yet still answers "applied". The server then
// records every guest file as taken, so a file left unticked would have
// its guest edit overwritten by the host's copy at the next sync. So the
// extension checks what was written and answers "not applied" unless the
// edit was taken whole.

/** The LSP shapes used here (a subset of `WorkspaceEdit`). */
export interface LspTextEdit {
  range: { start: { line: number; character: number }; end: { line: number; character: number } };
  newText: string;
  annotationId?: string;
}
export type LspDocumentChange =
  | { textDocument: { uri: string; version?: number | null }; edits: LspTextEdit[] }
  | { kind: 'create'; uri: string; annotationId?: string }
  | { kind: 'delete'; uri: string; annotationId?: string }
  | { kind: 'rename'; oldUri: string; newUri: string; annotationId?: string };
export interface LspWorkspaceEdit {
  documentChanges?: LspDocumentChange[];
  changes?: Record<string, LspTextEdit[]>;
  changeAnnotations?: Record<string, { label: string; needsConfirmation?: boolean; description?: string }>;
}

/** What one resource must look like once the edit is applied. */
export type Expectation =
  | { uri: string; kind: 'text'; text: string }
  | { uri: string; kind: 'exists' }
  | { uri: string; kind: 'absent' };

/** Whether VS Code will preview the edit (and wait for the user). */
export function needsConfirmation(edit: LspWorkspaceEdit): boolean {
  return Object.values(edit.changeAnnotations ?? {}).some((a) => a.needsConfirmation === true);
}

/**
 * The state the edit leads to, where it can be told from the result: a
 * whole-document replacement (what the server sends for each text file)
 * gives the text; a create, that the file exists; a delete, that it is
 * gone. Edits of part of a document are not checked.
 */
export function expectations(edit: LspWorkspaceEdit): Expectation[] {
  const out = new Map<string, Expectation>();
  for (const change of edit.documentChanges ?? []) {
    if ('textDocument' in change) {
      const whole = change.edits.length === 1 && change.edits[0].range.start.line === 0 && change.edits[0].range.start.character === 0;
      if (whole) {
        out.set(change.textDocument.uri, { uri: change.textDocument.uri, kind: 'text', text: change.edits[0].newText });
      } else {
        out.delete(change.textDocument.uri);
      }
    } else if (change.kind === 'create') {
      out.set(change.uri, { uri: change.uri, kind: 'exists' });
    } else if (change.kind === 'delete') {
      out.set(change.uri, { uri: change.uri, kind: 'absent' });
    } else if (change.kind === 'rename') {
      out.set(change.oldUri, { uri: change.oldUri, kind: 'absent' });
      out.set(change.newUri, { uri: change.newUri, kind: 'exists' });
    }
  }
  return [...out.values()];
}

/**
 * The expectations that do not hold. `text(uri)`: the resource's text as
 * the editor has it (or on disk), `undefined` if it cannot be read;
 * `exists(uri)`: whether it is on disk.
 */
export function unmet(
  expected: Expectation[],
  text: (uri: string) => string | undefined,
  exists: (uri: string) => boolean,
): Expectation[] {
  return expected.filter((e) => {
    switch (e.kind) {
      case 'text': {
        const now = text(e.uri);
        return now === undefined || normalizeEol(now) !== normalizeEol(e.text);
      }
      case 'exists':
        return !exists(e.uri);
      case 'absent':
        return exists(e.uri);
    }
  });
}

function normalizeEol(s: string): string {
  return s.replace(/\r\n/g, '\n');
}
