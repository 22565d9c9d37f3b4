//! Delta debugging (Zeller's ddmin): shrink a failing operation sequence to
//! one where removing any single chunk of operations (down to single
//! operations) makes the failure go away.

/// A subsequence of `input` for which `fails` still holds, 1-minimal when
/// fewer than `max_tests` tests suffice (else the smallest found so far).
/// `fails(input)` is assumed to hold.
pub fn ddmin<T: Clone>(input: &[T], max_tests: usize, mut fails: impl FnMut(&[T]) -> bool) -> Vec<T> {
    let mut cur: Vec<T> = input.to_vec();
    let mut n = 2usize;
    let mut tests = 0usize;
    while cur.len() >= 2 && tests < max_tests {
        let len = cur.len();
        let chunk = len.div_ceil(n);
        let parts: Vec<std::ops::Range<usize>> = (0..len).step_by(chunk).map(|s| s..(s + chunk).min(len)).collect();
        let mut reduced = false;
        // a single part that fails on its own
        for r in &parts {
            tests += 1;
            if fails(&cur[r.clone()]) {
                cur = cur[r.clone()].to_vec();
                n = 2;
                reduced = true;
                break;
            }
        }
        if !reduced && parts.len() > 2 {
            // everything but one part
            for r in &parts {
                let complement: Vec<T> = cur[..r.start].iter().chain(&cur[r.end..]).cloned().collect();
                tests += 1;
                if fails(&complement) {
                    cur = complement;
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
            }
        }
        if !reduced {
            if n >= len {
                break;
            }
            n = (2 * n).min(len);
        }
    }
    cur
}

/// A divergence found in a full operation sequence, and the 1-minimal
/// subsequence `ddmin` shrank it to (with where that one diverges).  Both
/// harnesses report through it, so both print a reproduction the same way.
#[derive(Clone, Debug)]
pub struct Minimised<Op, Divergence> {
    /// The first divergence in the full sequence.
    pub first: Divergence,
    pub ops: Vec<Op>,
    pub divergence: Divergence,
    /// How many candidate sequences the minimiser ran.
    pub tests: usize,
}

impl<Op: std::fmt::Display, Divergence: std::fmt::Display> std::fmt::Display for Minimised<Op, Divergence> {
    /// `DIVERGED <first>`, then the numbered reproduction.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "DIVERGED {}", self.first)?;
        writeln!(f, "minimised to {} ops ({} test runs), diverging {}:", self.ops.len(), self.tests, self.divergence)?;
        write_ops(f, &self.ops)
    }
}

/// `ops` one per line, numbered from 1, as a reproduction is printed.
pub fn write_ops(f: &mut impl std::fmt::Write, ops: &[impl std::fmt::Display]) -> std::fmt::Result {
    ops.iter().enumerate().try_for_each(|(i, op)| writeln!(f, "  {:>3}. {op}", i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_two_elements_that_together_fail() {
        let input: Vec<u32> = (0..100).collect();
        let out = ddmin(&input, 10_000, |s| s.contains(&17) && s.contains(&83));
        assert_eq!(out, vec![17, 83]);
    }

    #[test]
    fn keeps_order_dependent_pairs_in_order() {
        // fails when a 5 comes before a 9 (an alloc before the free of it)
        let input = vec![1, 9, 5, 2, 9, 3, 5, 4];
        let out = ddmin(&input, 10_000, |s| {
            let five = s.iter().position(|&x| x == 5);
            five.is_some_and(|p| s[p..].contains(&9))
        });
        assert_eq!(out, vec![5, 9]);
    }

    #[test]
    fn a_budget_still_returns_a_failing_sequence() {
        let input: Vec<u32> = (0..1000).collect();
        let fails = |s: &[u32]| s.iter().filter(|&&x| x % 7 == 0).count() >= 3;
        let out = ddmin(&input, 5, fails);
        assert!(fails(&out) && out.len() < input.len());
    }
}
