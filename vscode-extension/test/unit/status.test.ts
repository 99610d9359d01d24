import { test } from 'node:test';
import assert from 'node:assert/strict';

import { parseStatus, statusView } from '../../src/status';

const base = { vm: 'proj', vmState: 'running', sync: 'synced', guestChanges: 0, filesSent: 0 };

test('a running, synced sandbox shows its name, state and sync state', () => {
  const v = statusView('running', base);
  assert.equal(v.text, '$(vm) proj: running $(check) synced');
  assert.equal(v.severity, 'ok');
  assert.equal(v.label, 'banger sandbox proj: running, synced');
  assert.match(v.tooltip, /^Sandbox VM: proj \(running\)$/m);
  assert.match(v.tooltip, /Click to show the sandbox output/);
});

test('each sync state has its icon and severity', () => {
  assert.deepEqual(
    ['synced', 'syncing', 'conflict', 'error'].map((sync) => {
      const v = statusView('running', { ...base, sync });
      return [v.text, v.severity];
    }),
    [
      ['$(vm) proj: running $(check) synced', 'ok'],
      ['$(vm) proj: running $(sync~spin) syncing', 'busy'],
      ['$(vm) proj: running $(warning) conflict', 'warning'],
      ['$(vm) proj: running $(error) error', 'error'],
    ],
  );
});

test('a VM not created yet says the first command creates it', () => {
  const v = statusView('running', { ...base, vmState: 'absent' });
  assert.equal(v.text, '$(vm) proj: absent $(check) synced');
  assert.match(v.tooltip, /not created yet; the first command creates it/);
  assert.equal(v.severity, 'ok');
});

test('a booting VM is busy', () => {
  assert.equal(statusView('running', { ...base, vmState: 'starting' }).severity, 'busy');
});

test('guest changes are counted and point at the command that applies them', () => {
  const v = statusView('running', { ...base, guestChanges: 2 });
  assert.equal(v.text, '$(vm) proj: running $(check) synced $(cloud-download) 2');
  assert.match(v.tooltip, /changed 2 files: run "Banger: Apply Guest Changes"/);
  assert.equal(v.label, 'banger sandbox proj: running, synced, 2 files changed in the sandbox');
  assert.match(statusView('running', { ...base, guestChanges: 1 }).tooltip, /changed 1 file:/);
});

test('the server message and the last sync count are in the tooltip', () => {
  const v = statusView('running', { ...base, sync: 'conflict', message: 'changed in the sandbox and here: a.txt', filesSent: 0 });
  assert.match(v.tooltip, /changed in the sandbox and here: a\.txt/);
  assert.match(statusView('running', { ...base, filesSent: 3 }).tooltip, /Sync: synced \(3 files sent by the last sync\)/);
});

test('before the first status, and after a failure', () => {
  assert.equal(statusView('starting', undefined).text, '$(sync~spin) banger');
  const failed = statusView('failed', base, 'banger was not found ("banger")');
  assert.equal(failed.text, '$(error) banger');
  assert.equal(failed.severity, 'error');
  assert.match(failed.tooltip, /banger is not running: banger was not found/);
});

test('an error before the VM is known (no daemon) is shown as an error', () => {
  const v = statusView('running', { ...base, vm: '', vmState: 'absent', sync: 'error', message: 'cannot reach bangerd; see banger doctor' });
  assert.equal(v.text, '$(error) banger');
  assert.equal(v.severity, 'error');
  assert.equal(v.label, 'banger error: cannot reach bangerd; see banger doctor');
  assert.match(v.tooltip, /^banger: cannot reach bangerd; see banger doctor$/m);
});

test('parseStatus takes the documented payload and refuses others', () => {
  assert.deepEqual(parseStatus({ ...base, message: 'm', filesSent: 4 }), { ...base, message: 'm', filesSent: 4 });
  assert.equal(parseStatus({ vm: 'x' }), undefined);
  assert.equal(parseStatus(null), undefined);
  assert.equal(parseStatus('status'), undefined);
  // Missing counts read as 0; an empty message as none.
  assert.deepEqual(parseStatus({ vm: 'a', vmState: 'running', sync: 'synced', message: '' }), {
    vm: 'a',
    vmState: 'running',
    sync: 'synced',
    message: undefined,
    guestChanges: 0,
    filesSent: 0,
  });
});
