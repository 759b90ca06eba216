//! Split entries this worker has verified (with `verify`): a per-worker memo, so a split token
//! is verified on its first use by each worker, not on every request.
//!
//! An entry is remembered with the shared-data version of the store slot it was read from: a
//! slot's version changes on every write, so a re-published (or tampered) entry is verified
//! again. Bounded: at [`MEMO_MAX`] entries the expired ones go, and if none has expired the memo
//! is emptied (it refills on use).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::hash::TokenHash;

/// Entries of the per-worker memo of verified split tokens.
pub const MEMO_MAX: usize = 10_000;

/// Signature hash -> (slot version, served until).
#[derive(Default)]
pub struct Verified {
    memo: RefCell<HashMap<TokenHash, (Option<u32>, u64)>>,
}

impl Verified {
    pub fn is_verified(&self, hash: &TokenHash, version: Option<u32>, now_ms: u64) -> bool {
        self.memo
            .borrow()
            .get(hash)
            .is_some_and(|&(v, until)| v == version && now_ms < until)
    }

    pub fn remember_verified(
        &self,
        hash: &TokenHash,
        version: Option<u32>,
        until_ms: u64,
        now_ms: u64,
    ) {
        let mut memo = self.memo.borrow_mut();
        if memo.len() >= MEMO_MAX && !memo.contains_key(hash) {
            memo.retain(|_, &mut (_, until)| now_ms < until);
            if memo.len() >= MEMO_MAX {
                memo.clear();
            }
        }
        memo.insert(*hash, (version, until_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn the_memo_is_bound_to_the_slot_version_and_bounded() {
        let st = Verified::default();
        st.remember_verified(&[1; 32], Some(7), T0 + 10, T0);
        assert!(st.is_verified(&[1; 32], Some(7), T0));
        assert!(!st.is_verified(&[1; 32], Some(8), T0), "rewritten slot");
        assert!(!st.is_verified(&[1; 32], Some(7), T0 + 10), "expired");
        for i in 0..(MEMO_MAX as u32 + 5) {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_be_bytes());
            st.remember_verified(&h, None, T0 + 10, T0);
        }
        assert!(st.memo.borrow().len() <= MEMO_MAX);
    }
}
