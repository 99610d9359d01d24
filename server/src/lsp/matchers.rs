//! Problem matchers: test and build output → file/line problems, and the
//! pass/fail counts a runner printed. Pure functions over text (the guest's
//! output: untrusted, so nothing here trusts a path; the server maps and
//! checks them: `places::repo_file`).

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A failure or an error.
    Error,
    /// A warning.
    Warning,
    /// A note.
    Info,
}

/// One problem at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The path as the tool printed it.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, when printed.
    pub col: Option<u32>,
    /// What went wrong.
    pub message: String,
    /// How bad.
    pub severity: Severity,
}

/// Counts a runner printed (`None` where it does not tell).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tests passed.
    pub passed: Option<u64>,
    /// Tests failed.
    pub failed: Option<u64>,
}

/// Removes ANSI escape sequences (colour) from a line.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// `path:line[:col]` at the start of `s`; returns it and the rest after
/// the location's last colon (if any).
fn location(s: &str) -> Option<(String, u32, Option<u32>, &str)> {
    let mut parts = s.splitn(4, ':');
    let file = parts.next()?.trim();
    let line: u32 = parts.next()?.trim().parse().ok()?;
    let third = parts.next();
    let (col, rest) = match third.map(|t| (t, t.trim().parse::<u32>())) {
        Some((_, Ok(c))) => (Some(c), parts.next().unwrap_or("")),
        Some((t, Err(_))) => {
            // `file:line: message`: the third part is the message start.
            let start = s.len() - t.len() - parts.next().map(|r| r.len() + 1).unwrap_or(0);
            (None, &s[start..])
        }
        None => (None, ""),
    };
    plausible_path(file).then(|| (file.to_string(), line, col, rest))
}

/// A path a tool would print: no spaces, not a URL or a time, with a
/// directory or an extension.
fn plausible_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() < 1024
        && !p.contains(char::is_whitespace)
        && !p.contains("://")
        && !p.starts_with('-')
        && (p.contains('/') || p.contains('.'))
        && p.chars().any(|c| c.is_ascii_alphabetic())
        && !p.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn push(out: &mut Vec<Problem>, p: Problem) {
    if !out
        .iter()
        .any(|q| q.file == p.file && q.line == p.line && q.message == p.message)
    {
        out.push(p);
    }
}

/// Finds the problems in a run's output.
pub fn problems(output: &str) -> Vec<Problem> {
    let lines: Vec<String> = output.lines().map(strip_ansi).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].as_str();
        let t = line.trim_start();
        // A Python traceback (unittest, any uncaught exception): its last
        // frame outside the interpreter's own files, and the exception.
        if t == "Traceback (most recent call last):" {
            let (problem, next) = python_traceback(&lines, i + 1);
            if let Some(p) = problem {
                push(&mut out, p);
            }
            i = next;
            continue;
        }
        // rustc: `error[E0308]: message` then ` --> file:line:col`.
        if let Some(sev) = rustc_severity(t) {
            let message = t.split_once(": ").map(|x| x.1).unwrap_or(t).to_string();
            if let Some(loc) = lines[i + 1..]
                .iter()
                .take(4)
                .find_map(|l| l.trim_start().strip_prefix("--> "))
                && let Some((file, line, col, _)) = location(loc)
            {
                push(
                    &mut out,
                    Problem {
                        file,
                        line,
                        col,
                        message,
                        severity: sev,
                    },
                );
            }
            i += 1;
            continue;
        }
        // Rust panics: `thread 'x' panicked at file:line:col:` and the
        // message on the next lines (older: `panicked at 'msg', file:l:c`).
        if let Some(after) = t.split_once("panicked at ").map(|x| x.1) {
            let test = t
                .strip_prefix("thread '")
                .and_then(|r| r.split_once('\''))
                .map(|x| x.0);
            let (loc, mut message) = if let Some(rest) = after.strip_prefix('\'') {
                let (msg, loc) = rest.rsplit_once("', ").unwrap_or((rest, ""));
                (loc.to_string(), msg.to_string())
            } else {
                let loc = after.trim_end_matches(':').to_string();
                let msg: Vec<&str> = lines[i + 1..]
                    .iter()
                    .map(|l| l.as_str())
                    .take_while(|l| {
                        !l.trim().is_empty()
                            && !l.starts_with("note:")
                            && !l.starts_with("stack backtrace")
                    })
                    .take(8)
                    .collect();
                (loc, msg.join("\n"))
            };
            if let Some(test) = test {
                message = format!("{test}: {message}");
            }
            if let Some((file, line, col, _)) = location(&loc) {
                push(
                    &mut out,
                    Problem {
                        file,
                        line,
                        col,
                        message,
                        severity: Severity::Error,
                    },
                );
            }
            i += 1;
            continue;
        }
        // TAP / bats: `not ok N name`, then `# (in test file f, line N)`.
        if let Some(name) = t.strip_prefix("not ok ") {
            let name = name.trim_start_matches(|c: char| c.is_ascii_digit()).trim();
            let mut j = i + 1;
            let mut detail = Vec::new();
            let mut place = None;
            while j < lines.len() && lines[j].trim_start().starts_with('#') {
                let c = lines[j].trim_start().trim_start_matches('#').trim();
                if let Some(p) = bats_place(c) {
                    place = Some(p);
                } else if !c.is_empty() && detail.len() < 6 {
                    detail.push(c.to_string());
                }
                j += 1;
            }
            if let Some((file, line)) = place {
                let mut message = format!("not ok: {name}");
                if !detail.is_empty() {
                    message.push('\n');
                    message.push_str(&detail.join("\n"));
                }
                push(
                    &mut out,
                    Problem {
                        file,
                        line,
                        col: None,
                        message,
                        severity: Severity::Error,
                    },
                );
            }
            i = j;
            continue;
        }
        // Go panics: `panic: message`, then the goroutine's frames; the
        // first frame outside Go's own tree is where it happened.
        if let Some(msg) = t.strip_prefix("panic: ") {
            let frame = lines[i + 1..]
                .iter()
                .take(60)
                .filter(|l| l.starts_with('\t'))
                .map(|l| l.trim())
                .filter(|l| {
                    !l.contains("/usr/lib/go")
                        && !l.contains("/usr/local/go")
                        && !l.contains("/go/pkg/mod/")
                })
                .find_map(|l| {
                    let (file, rest) = l.rsplit_once(':')?;
                    let line = rest.split_whitespace().next()?.parse().ok()?;
                    plausible_path(file).then(|| (file.to_string(), line))
                });
            if let Some((file, line)) = frame {
                push(
                    &mut out,
                    Problem {
                        file,
                        line,
                        col: None,
                        message: format!("panic: {}", msg.trim_end_matches(" [recovered]")),
                        severity: Severity::Error,
                    },
                );
            }
            i += 1;
            continue;
        }
        // Shells: `file: line 7: message` (bash), `file: 7: message` (dash).
        if let Some((file, rest)) = t.split_once(": ")
            && plausible_path(file)
            && let Some((num, msg)) = rest.trim_start_matches("line ").split_once(": ")
            && let Ok(line) = num.parse::<u32>()
        {
            push(
                &mut out,
                Problem {
                    file: file.to_string(),
                    line,
                    col: None,
                    message: msg.to_string(),
                    severity: Severity::Error,
                },
            );
            i += 1;
            continue;
        }
        // Go (`    x_test.go:12: message`), pytest (`t.py:5: AssertionError`)
        // and the generic `file:line[:col]: message`.
        if let Some((file, line, col, rest)) = location(t) {
            let message = rest.trim();
            // pytest's short traceback: `file.py:5: in test_x` + `E   ...`.
            let mut message = message.to_string();
            let e_lines: Vec<&str> = lines[i + 1..]
                .iter()
                .map(|l| l.as_str())
                // The failing source line(s), indented, come first.
                .skip_while(|l| l.starts_with(' '))
                .take_while(|l| l.starts_with("E "))
                .take(6)
                .map(|l| l[1..].trim())
                .collect();
            if message.starts_with("in ") && !e_lines.is_empty() {
                message = format!("{}: {}", message, e_lines.join("\n"));
            } else if message.is_empty() {
                i += 1;
                continue;
            }
            let severity = if message.starts_with("warning") {
                Severity::Warning
            } else if message.starts_with("note") || message.starts_with("info") {
                Severity::Info
            } else {
                Severity::Error
            };
            // pytest prints the failing line's context before
            // `file:line: Error`; `E` lines came before it.
            if file.ends_with(".py") && !message.starts_with("in ") {
                let e_before: Vec<&str> = lines[..i]
                    .iter()
                    .rev()
                    .map(|l| l.as_str())
                    .skip_while(|l| l.trim().is_empty())
                    .take_while(|l| l.starts_with("E "))
                    .collect();
                if !e_before.is_empty() {
                    let mut e: Vec<&str> = e_before.iter().map(|l| l[1..].trim()).collect();
                    e.reverse();
                    e.truncate(6);
                    message = format!("{message}: {}", e.join("\n"));
                }
            }
            push(
                &mut out,
                Problem {
                    file,
                    line,
                    col,
                    message,
                    severity,
                },
            );
        }
        i += 1;
    }
    out
}

fn rustc_severity(t: &str) -> Option<Severity> {
    let head = t.split_once(':')?.0;
    let kind = head.split('[').next()?;
    match kind {
        "error" => Some(Severity::Error),
        "warning" => Some(Severity::Warning),
        _ => None,
    }
}

/// `(in test file test/a.bats, line 7)` → the place.
fn bats_place(c: &str) -> Option<(String, u32)> {
    let inner = c.strip_prefix("(in test file ")?.strip_suffix(')')?;
    let (file, line) = inner.rsplit_once(", line ")?;
    Some((file.to_string(), line.trim().parse().ok()?))
}

/// Numbers before a word in a summary line: `3 passed, 1 failed`.
fn count_before(line: &str, word: &str) -> Option<u64> {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '=')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches(['.', ',']) == word)
        .and_then(|w| w[0].parse().ok())
}

/// A traceback's frames from line `from`: the last frame in the project's
/// files (not the interpreter's: `/usr/`, `site-packages`, `<frozen ...>`)
/// with the exception line as the message, and the line after it.
fn python_traceback(lines: &[String], from: usize) -> (Option<Problem>, usize) {
    let mut place = None;
    let mut i = from;
    while i < lines.len() {
        let l = lines[i].trim_start();
        if let Some(rest) = l.strip_prefix("File \"")
            && let Some((file, rest)) = rest.split_once("\", line ")
        {
            let line: Option<u32> = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok());
            let project = !(file.starts_with("/usr/")
                || file.contains("site-packages")
                || file.starts_with('<'));
            if let (Some(line), true) = (line, project) {
                place = Some((file.to_string(), line));
            }
            i += 1;
            continue;
        }
        if lines[i].starts_with(' ') || l.is_empty() {
            // The frame's source line, or a `^^^^` marker.
            i += 1;
            continue;
        }
        break;
    }
    let message = lines
        .get(i)
        .map(|m| m.trim().to_string())
        .unwrap_or_default();
    let problem = place.map(|(file, line)| Problem {
        file,
        line,
        col: None,
        message,
        severity: Severity::Error,
    });
    (problem, (i + 1).min(lines.len().max(from)))
}

/// The pass/fail counts the output tells.
pub fn summary(output: &str) -> Summary {
    let mut cargo = (0u64, 0u64, false);
    let mut pytest = None;
    let mut tap = (0u64, 0u64, false);
    let mut go_fail = 0u64;
    let mut go_pass = 0u64;
    let mut go_seen = false;
    let mut unittest_ran = None;
    let mut unittest = None;
    for raw in output.lines() {
        let line = strip_ansi(raw);
        let t = line.trim();
        // unittest: `Ran 3 tests in 0.001s`, then `OK` or
        // `FAILED (failures=1, errors=1)`.
        if let Some(rest) = t.strip_prefix("Ran ")
            && let Some((n, _)) = rest.split_once(' ')
            && let Ok(n) = n.parse::<u64>()
            && (rest.contains(" tests in ") || rest.contains(" test in "))
        {
            unittest_ran = Some(n);
            continue;
        }
        if let Some(ran) = unittest_ran {
            if t == "OK" || t.starts_with("OK (") {
                unittest = Some((ran, 0));
            } else if let Some(rest) = t.strip_prefix("FAILED (") {
                let count = |k: &str| {
                    rest.trim_end_matches(')')
                        .split(", ")
                        .find_map(|kv| kv.strip_prefix(k))
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                let failed = count("failures=") + count("errors=");
                let skipped = count("skipped=");
                unittest = Some((ran.saturating_sub(failed + skipped), failed));
            }
        }
        if let Some(rest) = t.strip_prefix("test result: ") {
            if let (Some(p), Some(f)) = (count_before(rest, "passed"), count_before(rest, "failed"))
            {
                cargo = (cargo.0 + p, cargo.1 + f, true);
            }
        } else if (t.starts_with('=') || t.contains(" in "))
            && (t.contains(" passed") || t.contains(" failed"))
            && (t.ends_with('=') || t.contains("s ="))
            || (t.contains(" passed in ") || t.contains(" failed in "))
        {
            pytest = Some((
                count_before(t, "passed").unwrap_or(0),
                count_before(t, "failed").unwrap_or(0),
            ));
        } else if t.starts_with("ok ") && t[3..].starts_with(|c: char| c.is_ascii_digit()) {
            tap = (tap.0 + 1, tap.1, true);
        } else if t.starts_with("not ok ") {
            tap = (tap.0, tap.1 + 1, true);
        } else if t.starts_with("--- FAIL:") {
            go_fail += 1;
            go_seen = true;
        } else if t.starts_with("--- PASS:") {
            go_pass += 1;
            go_seen = true;
        }
    }
    if cargo.2 {
        return Summary {
            passed: Some(cargo.0),
            failed: Some(cargo.1),
        };
    }
    if let Some((p, f)) = pytest {
        return Summary {
            passed: Some(p),
            failed: Some(f),
        };
    }
    if let Some((p, f)) = unittest {
        return Summary {
            passed: Some(p),
            failed: Some(f),
        };
    }
    if tap.2 {
        return Summary {
            passed: Some(tap.0),
            failed: Some(tap.1),
        };
    }
    if go_seen {
        return Summary {
            // Without -v, go prints only the failures.
            passed: (go_pass > 0).then_some(go_pass),
            failed: Some(go_fail),
        };
    }
    Summary::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_need_a_plausible_path() {
        assert_eq!(
            location("src/a.rs:3:5: boom").map(|l| (l.0, l.1, l.2, l.3.trim().to_string())),
            Some(("src/a.rs".into(), 3, Some(5), "boom".into()))
        );
        assert_eq!(
            location("a_test.go:12: want 1").map(|l| (l.1, l.2, l.3.trim().to_string())),
            Some((12, None, "want 1".into()))
        );
        assert_eq!(location("http://x:80: no"), None);
        assert_eq!(location("12:30:01 started"), None);
        assert_eq!(location("note: see"), None);
    }

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/lsp/fixtures")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn places(name: &str) -> Vec<(String, u32, Option<u32>)> {
        problems(&fixture(name))
            .into_iter()
            .map(|p| (p.file, p.line, p.col))
            .collect()
    }

    fn place(f: &str, l: u32, c: Option<u32>) -> (String, u32, Option<u32>) {
        (f.to_string(), l, c)
    }

    // Real output, captured as fixtures/README.md says.

    #[test]
    fn cargo_compile_errors() {
        let p = problems(&fixture("cargo-compile-error.txt"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            place(&p[0].file, p[0].line, p[0].col),
            place("src/lib.rs", 6, Some(21))
        );
        assert_eq!(p[0].message, "mismatched types");
        assert_eq!(p[0].severity, Severity::Error);
    }

    #[test]
    fn cargo_test_panics_with_and_without_backtraces() {
        for f in ["cargo-test-panic.txt", "cargo-test-panic-backtrace.txt"] {
            let p = problems(&fixture(f));
            assert_eq!(
                p.iter()
                    .map(|p| place(&p.file, p.line, p.col))
                    .collect::<Vec<_>>(),
                [
                    place("src/lib.rs", 16, Some(9)),
                    place("tests/it.rs", 6, Some(5))
                ],
                "{f}: {p:?}"
            );
            assert!(
                p[0].message
                    .starts_with("tests::adds_wrongly: assertion `left == right` failed"),
                "{}",
                p[0].message
            );
            assert!(p[0].message.contains("left: 4"));
            assert_eq!(p[1].message, "integration_add: expected 3, got 2");
            assert_eq!(
                summary(&fixture(f)),
                Summary {
                    passed: Some(1),
                    failed: Some(2)
                }
            );
        }
    }

    #[test]
    fn unittest_tracebacks_name_the_projects_frame() {
        let p = problems(&fixture("unittest-fail.txt"));
        assert_eq!(
            places("unittest-fail.txt"),
            [
                place("/root/repo/tests/test_calc.py", 14, None),
                place("/root/repo/tests/test_calc.py", 8, None)
            ]
        );
        assert_eq!(p[0].message, "KeyError: 'missing'");
        assert_eq!(p[1].message, "AssertionError: 5 != 4");
        assert_eq!(
            summary(&fixture("unittest-fail.txt")),
            Summary {
                passed: Some(1),
                failed: Some(2)
            }
        );
        // Frames of the interpreter's own files are not the place.
        let out = "Traceback (most recent call last):\n  File \"/root/repo/app.py\", line 3, in <module>\n    json.loads(x)\n  File \"/usr/lib/python3.11/json/__init__.py\", line 346, in loads\n    return _default_decoder.decode(s)\njson.decoder.JSONDecodeError: Expecting value\n";
        let p = problems(out);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].file.as_str(), p[0].line), ("/root/repo/app.py", 3));
        assert_eq!(
            p[0].message,
            "json.decoder.JSONDecodeError: Expecting value"
        );
        assert_eq!(summary("Ran 2 tests in 0.000s\n\nOK\n").passed, Some(2));
    }

    #[test]
    fn pytest_long_and_short_tracebacks() {
        let p = problems(&fixture("pytest-fail.txt"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            place(&p[0].file, p[0].line, p[0].col),
            place("tests/test_math.py", 10, None)
        );
        assert_eq!(p[0].message, "AssertionError: assert 12 == 13");
        let p = problems(&fixture("pytest-fail-short.txt"));
        assert_eq!(
            places("pytest-fail-short.txt"),
            [place("tests/test_math.py", 10, None)]
        );
        assert!(p[0].message.contains("assert 12 == 13"), "{}", p[0].message);
        for f in ["pytest-fail.txt", "pytest-fail-short.txt"] {
            assert_eq!(
                summary(&fixture(f)),
                Summary {
                    passed: Some(1),
                    failed: Some(1)
                },
                "{f}"
            );
        }
    }

    #[test]
    fn go_failures_panics_and_build_errors() {
        assert_eq!(
            places("go-test-fail.txt"),
            [place("calc_test.go", 13, None)]
        );
        assert_eq!(
            summary(&fixture("go-test-fail.txt")),
            Summary {
                passed: None,
                failed: Some(1)
            }
        );
        let p = problems(&fixture("go-test-panic.txt"));
        assert_eq!(
            p.iter()
                .map(|p| place(&p.file, p.line, p.col))
                .collect::<Vec<_>>(),
            [
                place("calc_test.go", 13, None),
                place("/root/repo/strutil/strutil.go", 10, None)
            ]
        );
        assert!(
            p[1].message
                .starts_with("panic: runtime error: index out of range")
        );
        assert_eq!(
            places("go-build-error.txt"),
            [
                place("calc/calc.go", 8, Some(21)),
                place("calc/calc.go", 9, Some(9))
            ]
        );
    }

    #[test]
    fn tap_and_bats() {
        for f in ["bats-fail.txt", "bats-tap.txt"] {
            let p = problems(&fixture(f));
            assert_eq!(p.len(), 1, "{f}: {p:?}");
            assert_eq!(
                place(&p[0].file, p[0].line, p[0].col),
                place("test/basic.bats", 10, None)
            );
            assert!(p[0].message.starts_with("not ok: multiplication is wrong"));
            assert!(p[0].message.contains("-eq 13"));
            assert_eq!(
                summary(&fixture(f)),
                Summary {
                    passed: Some(2),
                    failed: Some(1)
                }
            );
        }
    }

    #[test]
    fn generic_compilers_shells_and_linters() {
        let p = problems(&fixture("generic-gcc.txt"));
        let got: Vec<_> = p.iter().map(|p| (p.line, p.col, p.severity)).collect();
        assert_eq!(
            got,
            [
                (4, Some(9), Severity::Warning),
                (10, Some(17), Severity::Warning),
                (11, Some(20), Severity::Error),
                (11, Some(20), Severity::Info),
                (10, Some(11), Severity::Warning),
            ]
        );
        assert!(p.iter().all(|p| p.file == "src/main.c"), "{p:?}");
        for f in ["sh-n.txt", "bash-n.txt"] {
            assert_eq!(places(f), [place("scripts/broken.sh", 7, None)], "{f}");
        }
        let p = problems(&fixture("shellcheck-gcc.txt"));
        assert_eq!(
            p.iter()
                .map(|p| (p.line, p.col, p.severity))
                .collect::<Vec<_>>(),
            [
                (3, Some(1), Severity::Warning),
                (3, Some(4), Severity::Info),
                (4, Some(10), Severity::Error),
                (4, Some(15), Severity::Info),
            ]
        );
    }

    #[test]
    fn generic_lines() {
        let p = problems("lib/x.c:10:2: error: expected ';'\nall good\n");
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].file.as_str(), p[0].line, p[0].col),
            ("lib/x.c", 10, Some(2))
        );
        assert_eq!(p[0].message, "error: expected ';'");
    }
}
