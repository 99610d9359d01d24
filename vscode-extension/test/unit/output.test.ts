import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  RunRouter,
  describeExit,
  formatDuration,
  parseTestResult,
  stamped,
  terminalChunk,
  terminalExitLine,
  testSummary,
  toTerminal,
  type Sink,
} from '../../src/output';

function recorder(): Sink & { text: string } {
  const r = {
    text: '',
    write(stream: string, text: string) {
      r.text += stream === 'stderr' ? `!${text}` : text;
    },
  };
  return r;
}

test('one pending run: its output streams to it as it comes', () => {
  const fallback = recorder();
  const router = new RunRouter(fallback);
  const exec = recorder();
  const t = router.begin(exec);
  router.output('run-7', 'stdout', 'a');
  assert.equal(exec.text, 'a');
  router.output('run-7', 'stderr', 'b');
  router.end(t, 'run-7');
  assert.equal(exec.text, 'a!b');
  assert.equal(fallback.text, '');
});

test('two pending runs: output is held until a result names its run', () => {
  const fallback = recorder();
  const router = new RunRouter(fallback);
  const tests = recorder();
  const exec = recorder();
  const tt = router.begin(tests);
  const te = router.begin(exec);
  router.output('run-2', 'stdout', 'from exec ');
  router.output('run-1', 'stdout', 'from tests ');
  assert.equal(tests.text + exec.text, '');
  router.end(te, 'run-2');
  assert.equal(exec.text, 'from exec ');
  // One request left: the held run is its own, and it streams from now on.
  assert.equal(tests.text, 'from tests ');
  router.output('run-1', 'stdout', 'more');
  assert.equal(tests.text, 'from tests more');
  router.end(tt, 'run-1');
  assert.equal(fallback.text, '');
});

test('a request that ends with no output hands the held run to the one left', () => {
  const router = new RunRouter(recorder());
  const a = recorder();
  const b = recorder();
  const ta = router.begin(a);
  const tb = router.begin(b);
  router.output('run-9', 'stdout', 'x');
  router.end(ta, 'run-8'); // a ran silently
  assert.equal(b.text, 'x');
  router.end(tb, 'run-9');
  assert.equal(a.text, '');
});

test('a request that failed without naming its run never gets another run output, and nothing is lost', () => {
  const fallback = recorder();
  const router = new RunRouter(fallback);
  const a = recorder();
  const b = recorder();
  const ta = router.begin(a);
  const tb = router.begin(b);
  router.output('run-1', 'stdout', 'whose? ');
  router.end(ta); // failed (cancelled): run-1 may have been a's
  assert.equal(b.text, '');
  router.output('run-2', 'stdout', 'b streams');
  assert.equal(b.text, 'b streams');
  router.end(tb, 'run-2');
  // Nobody claimed run-1: it is shown in the fallback, not dropped.
  assert.equal(fallback.text, 'whose? ');
});

test('output with no request pending goes to the fallback', () => {
  const fallback = recorder();
  const router = new RunRouter(fallback);
  router.output('run-3', 'stderr', 'late');
  assert.equal(fallback.text, '!late');
});

test('terminal text: CRLF line ends, stderr in red, exit line', () => {
  assert.equal(toTerminal('a\nb\r\nc'), 'a\r\nb\r\nc');
  assert.equal(terminalChunk('stdout', 'x\n'), 'x\r\n');
  assert.equal(terminalChunk('stderr', 'e\n'), '\x1b[31me\r\n\x1b[0m');
  assert.equal(terminalChunk('stderr', ''), '');
  assert.match(terminalExitLine(3), /\[exit code 3\]/);
  assert.match(terminalExitLine(0), /\x1b\[32m\[exit code 0\]/);
});

test('exit codes over 128 are signals, as in a shell', () => {
  assert.equal(describeExit(0), 'exit code 0');
  assert.equal(describeExit(1), 'exit code 1');
  assert.equal(describeExit(137), 'exit code 137 (killed by signal 9)');
  assert.equal(describeExit(255), 'exit code 255');
});

test('test summaries', () => {
  const r = parseTestResult({ runId: 'run-1', exitCode: 1, passed: null, failed: null, durationMs: 3210 });
  assert.ok(r);
  assert.equal(testSummary(r), 'Tests failed (exit code 1), in 3.2 s');
  assert.equal(
    testSummary({ runId: 'r', exitCode: 0, passed: 12, failed: 0, durationMs: 950 }),
    'Tests passed, 12 passed, 0 failed, in 950 ms',
  );
  assert.equal(
    testSummary({ runId: 'r', exitCode: 101, passed: 3, failed: 2, durationMs: 125_000 }),
    'Tests failed (exit code 101), 3 passed, 2 failed, in 2 min 5 s',
  );
  assert.equal(parseTestResult({ exitCode: 0 }), undefined);
  assert.equal(formatDuration(59_999), '60.0 s');
});

test('output channel lines are stamped with the local time', () => {
  assert.equal(stamped('Run tests', new Date(2026, 0, 2, 3, 4, 5)), '[03:04:05] Run tests');
});
