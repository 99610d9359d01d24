#!/usr/bin/env node
// The browser side of the extension's end-to-end test: drives a real VS Code
// (code-server's workbench in Debian's chromium, through playwright-core)
// with the banger extension installed and a git repository open, and checks
// what a user sees. Run by tests/guest/vscode.rs, which owns the sandbox
// (an isolated banger installation, the guest edit) and code-server.
//
// Usage: node vscode-e2e.js CONFIG.json, CONFIG being
//   { url, repo, vm, playwright, chromium, profile, screenshot, artifacts, machineSettings, brokenBanger,
//     guestEdit: {file, text, newFile, newText} }
// Protocol on stdout: `STEP what` lines as it goes; `WAIT name` when the Rust
// side must act (it answers `GO name` on stdin); `PASS` at the end. Any
// failure: a message on stderr, a screenshot in `artifacts`, exit code 1.

'use strict';

const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { chromium } = require(config.playwright);

const BOOT = 300_000; // a fresh VM under software emulation, first command
const STEP = 60_000;

const answers = readline.createInterface({ input: process.stdin });
const waiting = new Map();
answers.on('line', (line) => {
  const m = /^GO (\S+)$/.exec(line.trim());
  if (m && waiting.has(m[1])) {
    waiting.get(m[1])();
    waiting.delete(m[1]);
  }
});

function step(what) {
  console.log(`STEP ${what}`);
}

/** Asks the Rust side to do `name` and waits until it says it is done. */
function ask(name) {
  return new Promise((resolve) => {
    waiting.set(name, resolve);
    console.log(`WAIT ${name}`);
  });
}

/** Text as the page shows it (Monaco and xterm use no-break spaces). */
function plain(s) {
  return (s ?? '').replace(/\u00a0/g, ' ');
}

async function main(page) {
  const status = page.locator('[id="banger.banger.banger.status"]');
  const panel = page.locator('.part.panel');

  async function palette(title) {
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget input');
    await input.waitFor({ state: 'visible', timeout: STEP });
    await input.fill('>' + title);
    await page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first().waitFor({ timeout: STEP });
    await page.keyboard.press('Enter');
  }

  /** Waits until `probe()` returns a truthy value; fails with `what`. */
  async function until(what, probe, timeout = STEP) {
    const end = Date.now() + timeout;
    let last;
    for (;;) {
      last = await probe().catch((e) => {
        last = e;
        return undefined;
      });
      if (last) {
        return last;
      }
      if (Date.now() > end) {
        throw new Error(`timed out after ${timeout / 1000} s waiting for ${what}`);
      }
      await page.waitForTimeout(250);
    }
  }

  // What the item shows (icons are glyphs, not text) and what it says to a
  // screen reader.
  const statusText = async () => plain(await status.textContent({ timeout: 1000 })).replace(/\s+/g, ' ').trim();
  const statusLabel = async () => plain(await status.getAttribute('aria-label', { timeout: 1000 }));
  const toast = (text) => page.locator('.notification-toast', { hasText: text });
  const read = (rel) => {
    try {
      return fs.readFileSync(path.join(config.repo, rel), 'utf8');
    } catch {
      return undefined;
    }
  };

  step('open the repository in VS Code');
  await page.goto(config.url);
  await page.waitForSelector('.monaco-workbench .statusbar', { timeout: STEP });

  step('VS Code asks whether to trust the folder: no (restricted mode)');
  await page.locator('.monaco-dialog-box .monaco-button', { hasText: "No, I don't trust the authors" }).click({ timeout: STEP });

  step(`the status bar names the sandbox ${config.vm}, not created yet`);
  await until(`a status bar item "${config.vm}: absent synced"`, async () => (await statusText()) === `${config.vm}: absent synced`);
  if ((await statusLabel()) !== `banger sandbox ${config.vm}: absent, synced`) {
    throw new Error(`status label: ${await statusLabel()}`);
  }
  const original = read(config.guestEdit.file);

  step("untrusted: neither .banger.toml's nor .vscode/settings.json's test command is run, and the user is told why");
  await palette('Banger: Run Tests in Sandbox');
  const refused = toast('no test command found');
  await refused.waitFor({ timeout: STEP });
  if (!plain(await refused.textContent()).includes('This workspace is untrusted: the test command in .banger.toml is not used until you trust it.')) {
    throw new Error(`refusal: ${await refused.textContent()}`);
  }
  if ((await statusText()) !== `${config.vm}: absent synced`) {
    throw new Error(`a sandbox was made for an untrusted workspace: ${await statusText()}`);
  }

  step('trust the folder from the notification; banger is told at once');
  await refused.getByRole('button', { name: 'Manage Workspace Trust' }).click();
  await page.locator('.workspace-trust-editor .monaco-button', { hasText: /^Trust$/ }).click({ timeout: STEP });
  await toast('the workspace is trusted now, so the test command in .banger.toml is used').waitFor({ timeout: STEP });
  await palette('View: Close All Editors');
  await palette('Notifications: Clear All Notifications');

  step('"Banger: Run Tests in Sandbox" creates the sandbox and runs the suite');
  await palette('Banger: Run Tests in Sandbox');
  const failed = toast('Tests failed (exit code 1)');
  await failed.waitFor({ timeout: BOOT });
  await until(`"${config.vm}: running synced" in the status bar`, async () => (await statusText()) === `${config.vm}: running synced`, 10_000);

  step('the failure is in the Problems panel at src/calc.sh line 2');
  await failed.getByRole('button', { name: 'Show Problems' }).click();
  const fileRow = panel.locator('.markers-panel .monaco-list-row[aria-label="1 problems in file calc.sh of folder src"]');
  await fileRow.waitFor({ timeout: STEP });
  const marker = panel.locator('.markers-panel .monaco-list-row', { hasText: 'add 2 2 gave 5, want 4' });
  await marker.waitFor({ timeout: STEP });
  const markerLabel = await marker.getAttribute('aria-label');
  if (markerLabel !== 'Error: add 2 2 gave 5, want 4 at line 2 and character 1. generated by banger') {
    throw new Error(`problem row: ${markerLabel}`);
  }
  if (!plain(await marker.textContent()).includes('[Ln 2, Col 1]')) {
    throw new Error(`problem row text: ${await marker.textContent()}`);
  }

  step('the problem opens the file at the line, underlined; screenshot');
  await marker.click();
  const editor = page.locator('.editor-group-container.active .monaco-editor').first();
  await page.locator('.tab.active', { hasText: 'calc.sh' }).waitFor({ timeout: STEP });
  await editor.locator('.squiggly-error').first().waitFor({ timeout: STEP });
  await palette('Notifications: Clear All Notifications');
  await page.waitForTimeout(500);
  await page.screenshot({ path: config.screenshot });

  step('"Banger: Show Sandbox Output" shows the run streamed into the output channel');
  await palette('Banger: Show Sandbox Output');
  await until('the run in the banger output channel', async () => {
    const text = plain(await panel.locator('.view-lines').first().textContent({ timeout: 1000 }));
    return /Run tests in sandbox/.test(text) && text.includes('running 1 test') && text.includes('src/calc.sh:2: add 2 2 gave 5, want 4') && /Tests failed \(exit code 1\)/.test(text);
  });

  step('"Banger: Exec in Sandbox…" runs a command line in a terminal, output then exit code');
  await palette('Banger: Exec in Sandbox…');
  const box = page.locator('.quick-input-widget input');
  await box.waitFor({ state: 'visible', timeout: STEP });
  await box.fill('echo out-$((6*7)) in $(pwd); echo to-stderr >&2; exit 3');
  await page.keyboard.press('Enter');
  await until('the command and its exit code in the terminal', async () => {
    const text = plain(await panel.locator('.terminal-wrapper.active .xterm-rows').textContent({ timeout: 1000 }));
    return text.includes('out-42 in /root/repo') && text.includes('to-stderr') && text.includes('[exit code 3]') ? text : undefined;
  });

  step('Ctrl+C in the terminal kills the command in the sandbox');
  await palette('Banger: Exec in Sandbox…');
  await box.waitFor({ state: 'visible', timeout: STEP });
  await box.fill('echo sleeping; sleep 987');
  await page.keyboard.press('Enter');
  const terminal = panel.locator('.terminal-wrapper.active .xterm-rows');
  await until('the long command started', async () => plain(await terminal.textContent({ timeout: 1000 })).includes('sleeping'));
  await ask('sleeper-running');
  await panel.locator('.terminal-wrapper.active .xterm').click();
  await page.keyboard.press('Control+C');
  await until('the cancellation in the terminal', async () =>
    plain(await terminal.textContent({ timeout: 1000 })).includes('^C') &&
    plain(await terminal.textContent({ timeout: 1000 })).includes('[cancelled: the command was killed in the sandbox]'),
  );
  await ask('sleeper-gone');

  step('the sandbox edits files; the status bar counts them');
  await ask('guest-edit');
  await until('"2 guest changes" in the status bar', async () => (await statusText()) === `${config.vm}: running synced 2`);
  if ((await statusLabel()) !== `banger sandbox ${config.vm}: running, synced, 2 files changed in the sandbox`) {
    throw new Error(`status label: ${await statusLabel()}`);
  }

  step('"Banger: Apply Guest Changes" shows the Refactor Preview; Discard writes nothing');
  await palette('Banger: Apply Guest Changes');
  // The preview's file rows: "calc.sh src", "NOTES.txt src (creating)".
  const previewFile = (rel) =>
    panel.locator('.monaco-list-row[aria-level="1"]', { hasText: path.basename(rel) }).filter({ hasText: path.dirname(rel) });
  const previewRow = previewFile(config.guestEdit.file);
  await previewRow.waitFor({ timeout: STEP });
  await previewFile(config.guestEdit.newFile).filter({ hasText: '(creating)' }).waitFor({ timeout: STEP });
  if (read(config.guestEdit.file) !== original || read(config.guestEdit.newFile) !== undefined) {
    throw new Error('files were written before the preview was confirmed');
  }
  await panel.getByRole('button', { name: 'Discard', exact: true }).click();
  await toast('the guest changes were not applied').waitFor({ timeout: STEP });
  if (read(config.guestEdit.file) !== original || read(config.guestEdit.newFile) !== undefined) {
    throw new Error('Discard wrote files');
  }
  await palette('Notifications: Clear All Notifications');

  step('again: tick the files in the preview and Apply; the guest edit is in the file, saved');
  await palette('Banger: Apply Guest Changes');
  await previewRow.waitFor({ timeout: STEP });
  const boxes = panel.locator('.monaco-list-row[aria-level="1"] input.edit-checkbox');
  await until('two files in the preview', async () => (await boxes.count()) === 2);
  for (let i = 0; i < 2; i++) {
    await boxes.nth(i).check();
  }
  await panel.getByRole('button', { name: 'Apply', exact: true }).click();
  await toast(`applied 2 files from the sandbox ${config.vm}`).waitFor({ timeout: STEP });
  await until('the guest edit in the editor', async () =>
    plain(await editor.locator('.view-lines').textContent({ timeout: 1000 })).includes(config.guestEdit.text.split('\n')[0]),
  );
  await until('the edited files saved on disk', async () =>
    read(config.guestEdit.file) === config.guestEdit.text && read(config.guestEdit.newFile) === config.guestEdit.newText,
  );
  if ((await page.locator('.tab.dirty').count()) !== 0) {
    throw new Error('an edited file was left unsaved');
  }
  await until('no guest changes left in the status bar', async () => (await statusText()) === `${config.vm}: running synced`);
  await palette('Notifications: Clear All Notifications');

  step('the keybinding (Ctrl+Alt+T) runs the tests again: they pass, the problem is gone');
  await editor.locator('.view-lines').click();
  await page.keyboard.press('Control+Alt+KeyT');
  await until(
    'a passing run',
    async () => (await page.locator('.statusbar-item', { hasText: 'banger: Tests passed' }).count()) > 0,
    BOOT,
  );
  await until('no problems', async () => (await page.locator('[id="status.problems"]').getAttribute('aria-label')) === 'No Problems');
  if ((await editor.locator('.squiggly-error').count()) !== 0) {
    throw new Error('the diagnostic is still shown in the editor');
  }

  step('banger.path pointing nowhere: a clear error with "Show Output", and the status bar says so');
  const settings = JSON.parse(fs.readFileSync(config.machineSettings, 'utf8'));
  const goodPath = settings['banger.path'];
  fs.writeFileSync(config.machineSettings, JSON.stringify({ ...settings, 'banger.path': '/nonexistent/banger' }, null, 2));
  const missing = toast('banger was not found ("/nonexistent/banger")');
  await missing.waitFor({ timeout: STEP });
  await until('an error in the status bar', async () => (await statusLabel()) === 'banger is not running');
  await missing.getByRole('button', { name: 'Show Output' }).click();
  await until('the error in the banger output channel', async () =>
    plain(await panel.locator('.view-lines').first().textContent({ timeout: 1000 })).includes('banger was not found ("/nonexistent/banger")'),
  );

  step('a banger whose daemon cannot start: a clear error with "Show Output"');
  await palette('Notifications: Clear All Notifications');
  fs.writeFileSync(config.machineSettings, JSON.stringify({ ...settings, 'banger.path': config.brokenBanger }, null, 2));
  const noDaemon = toast('the daemon (bangerd) cannot start or be reached');
  await noDaemon.waitFor({ timeout: STEP });
  await until('the daemon error in the status bar', async () => (await statusLabel()).startsWith('banger error: cannot reach bangerd'));
  await noDaemon.getByRole('button', { name: 'Show Output' }).click();
  await until('the daemon error in the banger output channel', async () =>
    plain(await panel.locator('.view-lines').first().textContent({ timeout: 1000 })).includes('the banger daemon cannot be reached'),
  );

  step('banger.path fixed: the server restarts and finds the running sandbox');
  fs.writeFileSync(config.machineSettings, JSON.stringify({ ...settings, 'banger.path': goodPath }, null, 2));
  await until(`"${config.vm}: running synced" in the status bar again`, async () => (await statusText()) === `${config.vm}: running synced`);
}

(async () => {
  fs.mkdirSync(config.artifacts, { recursive: true });
  const context = await chromium.launchPersistentContext(config.profile, {
    executablePath: config.chromium,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  let code = 0;
  try {
    await main(page);
    console.log('PASS');
  } catch (e) {
    code = 1;
    console.error(`FAIL: ${e && e.stack ? e.stack : e}`);
    await page.screenshot({ path: path.join(config.artifacts, 'failure.png') }).catch(() => undefined);
  } finally {
    await context.close().catch(() => undefined);
    answers.close();
  }
  process.exit(code);
})().catch((e) => {
  console.error(`FAIL: ${e && e.stack ? e.stack : e}`);
  process.exit(2);
});
