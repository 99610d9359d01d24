import { test } from 'node:test';
import assert from 'node:assert/strict';

import { needsRestart, readSettings, serverOptions } from '../../src/settings';

const getter = (values: Record<string, unknown>) => (k: string) => values[k];

test('defaults: banger on PATH, everything else unset, sync on save', () => {
  const { settings, problems } = readSettings(getter({}));
  assert.deepEqual(settings, { path: 'banger', vm: '', testCommand: '', syncOnSave: true, vcpu: null, memory: null, nat: null, allow: null, image: '' });
  assert.deepEqual(problems, []);
});

test('settings become the server options, every key present, with trust', () => {
  const { settings } = readSettings(
    getter({ path: ' /opt/banger ', vm: 'dev', testCommand: 'cargo test', syncOnSave: false, vcpu: 4, memory: '2G', nat: true, allow: [' pypi.org ', '*.pythonhosted.org'], image: ' py-dev ' }),
  );
  assert.equal(settings.path, '/opt/banger');
  assert.deepEqual(serverOptions(settings, false), {
    banger: { vm: 'dev', testCommand: 'cargo test', syncOnSave: false, vcpu: 4, memory: '2G', nat: true, allow: ['pypi.org', '*.pythonhosted.org'], image: 'py-dev', trusted: false },
  });
  // Cleared settings are sent as empty/null, so the server drops old values.
  assert.deepEqual(serverOptions(readSettings(getter({})).settings, true), {
    banger: { vm: '', testCommand: '', syncOnSave: true, vcpu: null, memory: null, nat: null, allow: null, image: '', trusted: true },
  });
});

test('memory: MiB as a number or digits, or a size the server reads', () => {
  const mem = (v: unknown) => readSettings(getter({ memory: v }));
  assert.equal(mem(2048).settings.memory, 2048);
  // "2048" as a string would be bytes to the server: it is MiB here.
  assert.equal(mem('2048').settings.memory, 2048);
  for (const ok of ['2G', '512M', '1GiB', '4GB', '1t']) {
    assert.equal(mem(ok).settings.memory, ok, ok);
  }
  for (const bad of ['two gigs', '2.5G', '2 G', -1, 1.5, 0, true]) {
    const r = mem(bad);
    assert.equal(r.settings.memory, null, String(bad));
    assert.equal(r.problems.length, 1, String(bad));
    assert.equal(r.problems[0].setting, 'banger.memory');
  }
  assert.equal(mem('').problems.length, 0);
  assert.equal(mem(null).problems.length, 0);
});

test('vcpu: a whole number of at least 1', () => {
  assert.equal(readSettings(getter({ vcpu: 2 })).settings.vcpu, 2);
  for (const bad of [0, -2, 1.5, '4']) {
    const r = readSettings(getter({ vcpu: bad }));
    assert.equal(r.settings.vcpu, null, String(bad));
    assert.equal(r.problems[0].setting, 'banger.vcpu');
  }
});

test('a new path or syncOnSave restarts the server; the rest is sent to it', () => {
  const a = readSettings(getter({})).settings;
  assert.equal(needsRestart(a, { ...a, path: '/usr/local/bin/banger' }), true);
  assert.equal(needsRestart(a, { ...a, syncOnSave: false }), true);
  assert.equal(needsRestart(a, { ...a, vm: 'other', testCommand: 'make check', vcpu: 8, memory: '4G' }), false);
});

test('nat and allow: booleans and lists of names, anything else reported', () => {
  const r = readSettings(getter({ nat: 'yes', allow: ['a.org', 7, ''] }));
  assert.equal(r.settings.nat, null);
  assert.deepEqual(r.settings.allow, ['a.org']);
  assert.deepEqual(r.problems.map((p) => p.setting), ['banger.nat', 'banger.allow']);
  assert.equal(readSettings(getter({ allow: 'a.org' })).settings.allow, null);
});
