//! Which registered buffers are lent out, by their index in the ring's
//! buffer table: to an op in flight, or to a reply until its send completes.
//!
//! A registered buffer handed to a second owner while the first still holds
//! it would let the kernel read or write memory someone else is filling.
//! Ownership makes that impossible by construction; this table checks it
//! anyway, in release builds too, and counts every violation (an audit that
//! must stay 0: docs/TESTING.md).

#[derive(Debug, Default)]
pub struct LentTable {
    lent: Vec<bool>,
    /// Buffers lent again before they came back (the audit counter).
    pub reuse_violations: u64,
    /// A test broke the engine on purpose: the next violation is expected
    /// (counted, without the debug assertion).
    pub violation_expected: bool,
}

impl LentTable {
    /// Marks a registered buffer as lent; counts a violation if it already was.
    pub fn lend(&mut self, index: Option<u16>) {
        let Some(i) = index else { return };
        let i = i as usize;
        if self.lent.len() <= i {
            self.lent.resize(i + 1, false);
        }
        if std::mem::replace(&mut self.lent[i], true) {
            self.reuse_violations += 1;
            debug_assert!(self.violation_expected, "registered buffer {i} reused before its last completion");
        }
    }

    /// Marks a registered buffer as back with its owner.
    pub fn home(&mut self, index: Option<u16>) {
        if let Some(slot) = index.and_then(|i| self.lent.get_mut(i as usize)) {
            *slot = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: lending a buffer twice without it coming home counts one violation; lend-home-lend counts none.
    #[test]
    fn double_lend_is_counted() {
        let mut t = LentTable { violation_expected: true, ..LentTable::default() };
        t.lend(Some(3));
        t.home(Some(3));
        t.lend(Some(3));
        assert_eq!(t.reuse_violations, 0);
        t.lend(Some(3));
        assert_eq!(t.reuse_violations, 1);
        t.lend(None);
        assert_eq!(t.reuse_violations, 1);
    }
}
