import { test } from 'node:test';
import assert from 'node:assert/strict';

import { expectations, needsConfirmation, unmet, type LspWorkspaceEdit } from '../../src/edits';

const whole = (text: string, endLine = 3) => ({
  range: { start: { line: 0, character: 0 }, end: { line: endLine, character: 0 } },
  newText: text,
  annotationId: 'banger.guestChanges',
});

// The shape banger lsp sends (server/src/lsp/edits.rs): a modified file, a
// created one, a deleted one, all under one annotation.
const guestEdit: LspWorkspaceEdit = {
  documentChanges: [
    { textDocument: { uri: 'file:///r/src/calc.sh', version: 3 }, edits: [whole('fixed\n')] },
    { kind: 'create', uri: 'file:///r/new.txt', annotationId: 'banger.guestChanges' },
    { textDocument: { uri: 'file:///r/new.txt', version: null }, edits: [whole('new\n', 0)] },
    { kind: 'delete', uri: 'file:///r/gone.txt', annotationId: 'banger.guestChanges' },
  ],
  changeAnnotations: {
    'banger.guestChanges': { label: 'Apply guest changes', needsConfirmation: true, description: '3 files from the sandbox x' },
  },
};

test('the guest edit needs confirmation; a plain edit does not', () => {
  assert.equal(needsConfirmation(guestEdit), true);
  assert.equal(needsConfirmation({ documentChanges: [] }), false);
  assert.equal(needsConfirmation({ changeAnnotations: { a: { label: 'a', needsConfirmation: false } } }), false);
});

test('expectations: the text of each file, created files exist, deleted ones do not', () => {
  assert.deepEqual(expectations(guestEdit), [
    { uri: 'file:///r/src/calc.sh', kind: 'text', text: 'fixed\n' },
    // The text edit after the create supersedes "exists".
    { uri: 'file:///r/new.txt', kind: 'text', text: 'new\n' },
    { uri: 'file:///r/gone.txt', kind: 'absent' },
  ]);
});

test('partial text edits are not checked', () => {
  const partial: LspWorkspaceEdit = {
    documentChanges: [
      {
        textDocument: { uri: 'file:///r/a', version: 1 },
        edits: [{ range: { start: { line: 4, character: 2 }, end: { line: 4, character: 3 } }, newText: 'x' }],
      },
    ],
  };
  assert.deepEqual(expectations(partial), []);
});

test('unmet: all taken, one file left unticked, a delete not done', () => {
  const expected = expectations(guestEdit);
  const disk = new Map([
    ['file:///r/src/calc.sh', 'fixed\r\n'],
    ['file:///r/new.txt', 'new\n'],
  ]);
  const text = (u: string) => disk.get(u);
  const exists = (u: string) => disk.has(u);
  assert.deepEqual(unmet(expected, text, exists), []);

  disk.set('file:///r/src/calc.sh', 'old\n');
  assert.deepEqual(
    unmet(expected, text, exists).map((e) => e.uri),
    ['file:///r/src/calc.sh'],
  );
  disk.set('file:///r/gone.txt', '');
  disk.delete('file:///r/new.txt');
  assert.deepEqual(
    unmet(expected, text, exists).map((e) => e.uri),
    ['file:///r/src/calc.sh', 'file:///r/new.txt', 'file:///r/gone.txt'],
  );
});
