//! Unified diffs of one file, host copy → guest copy (pure), for the
//! `changes` tool: what `apply_changes` would do to the host.

use std::time::Duration;

/// The diff of `path` from `host` to `guest` (`None`: the side has no
/// file), and whether the file is binary (then no diff). Links diff their
/// targets.
pub(crate) fn unified(
    path: &str,
    host: Option<&[u8]>,
    guest: Option<&[u8]>,
    link: bool,
) -> (Option<String>, bool) {
    let text = |b: Option<&[u8]>| -> Option<Option<String>> {
        match b {
            None => Some(None),
            Some(b) if b.contains(&0) => None,
            Some(b) => std::str::from_utf8(b).ok().map(|t| Some(t.to_string())),
        }
    };
    let (Some(old), Some(new)) = (text(host), text(guest)) else {
        return (None, true);
    };
    let a = if old.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".into()
    };
    let b = if new.is_some() {
        format!("b/{path}")
    } else {
        "/dev/null".into()
    };
    let (old, new) = (old.unwrap_or_default(), new.unwrap_or_default());
    let (old, new) = if link {
        (format!("link to {old}\n"), format!("link to {new}\n"))
    } else {
        (old, new)
    };
    // Bounded: a pathological pair of files falls back to a coarser diff
    // rather than holding the tool call.
    let diff = similar::TextDiff::configure()
        .timeout(Duration::from_millis(500))
        .diff_lines(&old, &new);
    let body = diff
        .unified_diff()
        .context_radius(3)
        .header(&a, &b)
        .to_string();
    (Some(body), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_show_host_to_guest() {
        let (d, bin) = unified(
            "a.py",
            Some(b"x = 1\ny = 2\n"),
            Some(b"x = 1\ny = 3\n"),
            false,
        );
        assert!(!bin);
        let d = d.unwrap();
        assert!(d.starts_with("--- a/a.py\n+++ b/a.py\n@@"), "{d}");
        assert!(d.contains("-y = 2\n+y = 3\n"), "{d}");
        let (d, _) = unified("new.txt", None, Some(b"hi\n"), false);
        assert!(d.unwrap().starts_with("--- /dev/null\n+++ b/new.txt"));
        let (d, _) = unified("gone.txt", Some(b"hi\n"), None, false);
        assert!(d.unwrap().contains("+++ /dev/null"));
        assert_eq!(
            unified("img", Some(b"\0\x01"), Some(b"x"), false),
            (None, true)
        );
    }
}
