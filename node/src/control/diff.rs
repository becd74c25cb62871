//! A unified diff of two configuration texts (`llmgw-ctl config diff`):
//! line-based, by longest common subsequence, three lines of context, as
//! `diff -u` prints it. Configurations are small; the quadratic table is
//! bounded by refusing texts past [`MAX_LINES`] lines on either side.

use std::fmt::Write;

/// Longest text compared line by line.
pub const MAX_LINES: usize = 20_000;

const CONTEXT: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Same(usize, usize),
    Del(usize),
    Add(usize),
}

/// The unified diff from `old` to `new`; empty when they are the same.
pub fn unified(old_name: &str, old: &str, new_name: &str, new: &str) -> Result<String, String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() > MAX_LINES || b.len() > MAX_LINES {
        return Err(format!(
            "too large to compare (more than {MAX_LINES} lines)"
        ));
    }
    let ops = script(&a, &b);
    if ops.iter().all(|o| matches!(o, Op::Same(..))) {
        return Ok(String::new());
    }
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    // Hunks: runs of changes with up to 2*CONTEXT unchanged lines inside.
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| !matches!(o, Op::Same(..)))
        .map(|(i, _)| i)
        .collect();
    let mut i = 0;
    while i < changed.len() {
        let start = changed[i].saturating_sub(CONTEXT);
        let mut end = changed[i];
        while i + 1 < changed.len() && changed[i + 1] - end <= 2 * CONTEXT {
            i += 1;
            end = changed[i];
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        hunk(&mut out, &ops[start..end], &a, &b);
        i += 1;
    }
    Ok(out)
}

fn hunk(out: &mut String, ops: &[Op], a: &[&str], b: &[&str]) {
    // Where the hunk starts on each side (1-based), and how long it is.
    let mut a_start = None;
    let mut b_start = None;
    let (mut a_len, mut b_len) = (0, 0);
    for op in ops {
        match *op {
            Op::Same(x, y) => {
                a_start.get_or_insert(x);
                b_start.get_or_insert(y);
                a_len += 1;
                b_len += 1;
            }
            Op::Del(x) => {
                a_start.get_or_insert(x);
                a_len += 1;
            }
            Op::Add(y) => {
                b_start.get_or_insert(y);
                b_len += 1;
            }
        }
    }
    let at = |s: Option<usize>, len: usize| {
        if len == 0 {
            s.unwrap_or(0)
        } else {
            s.unwrap_or(0) + 1
        }
    };
    let _ = writeln!(
        out,
        "@@ -{},{a_len} +{},{b_len} @@",
        at(a_start, a_len),
        at(b_start, b_len)
    );
    for op in ops {
        let _ = match *op {
            Op::Same(x, _) => writeln!(out, " {}", a[x]),
            Op::Del(x) => writeln!(out, "-{}", a[x]),
            Op::Add(y) => writeln!(out, "+{}", b[y]),
        };
    }
}

/// The edit script by longest common subsequence (deletions before
/// additions within a change, as `diff` prints them).
fn script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: the LCS length of a[i..] and b[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i] == b[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
            ops.push(Op::Del(i));
            i += 1;
        } else {
            ops.push(Op::Add(j));
            j += 1;
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_texts_have_no_diff() {
        assert_eq!(unified("a", "x\ny\n", "b", "x\ny\n"), Ok(String::new()));
    }

    #[test]
    fn a_changed_line_in_the_middle() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        let d = unified("v1", old, "v2", new).expect("diff");
        assert_eq!(
            d,
            "--- v1\n+++ v2\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn far_apart_changes_make_two_hunks_and_additions_at_the_end() {
        let old: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let new = old
            .replacen("\n2\n", "\ntwo\n", 1)
            .replacen("\n20\n", "\n20\n21\n", 1);
        let d = unified("a", &old, "b", &new).expect("diff");
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
        assert!(d.contains("-2\n+two\n"), "{d}");
        assert!(d.ends_with(" 20\n+21\n"), "{d}");
        // From nothing: one hunk of additions.
        let d = unified("a", "", "b", "x\n").expect("diff");
        assert_eq!(d, "--- a\n+++ b\n@@ -0,0 +1,1 @@\n+x\n");
    }
}
