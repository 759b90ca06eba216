//! Cookies this worker opened recently (`cookies`): the plaintext of a browser's `-at` and
//! `-csrf` cookies, by the cookie value's keyed hash ([`crate::hash::FastKey`]), so that a
//! browser's next request costs a keyed hash instead of an AES-256-GCM decryption (in a VM
//! without AES instructions, several microseconds). Only values that authenticated under a key
//! of this configuration are kept: a tampered or foreign cookie is never found here and is
//! opened (and refused) every time. The token inside is judged like any other on every request
//! (caches, marks, policy): this saves the decryption only. Bounded in entries and bytes; when
//! either bound is reached it is emptied and refills. One per configuration (a reload that
//! retires a key starts empty).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::rc::Rc;

use crate::hash::FastKey;
use crate::storage::local::DigestHasher;

/// Values kept per worker.
pub const MAX_ENTRIES: usize = 4_096;
/// Bytes of plaintext kept per worker.
pub const MAX_BYTES: usize = 512 * 1024;

#[derive(Default)]
pub struct Opened {
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<FastKey, Rc<str>, BuildHasherDefault<DigestHasher>>,
    bytes: usize,
}

impl Opened {
    /// The plaintext of the cookie value whose keyed hash is `key`, if it was opened here.
    pub fn get(&self, key: &FastKey) -> Option<Rc<str>> {
        self.inner.try_borrow().ok()?.map.get(key).cloned()
    }

    pub fn put(&self, key: &FastKey, plain: Rc<str>) {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return;
        };
        if inner.map.len() >= MAX_ENTRIES || inner.bytes + plain.len() > MAX_BYTES {
            inner.map.clear();
            inner.bytes = 0;
        }
        let added = plain.len();
        let old = inner.map.insert(*key, plain).map_or(0, |o| o.len());
        inner.bytes = inner.bytes + added - old;
    }

    pub fn len(&self) -> usize {
        self.inner.try_borrow().map_or(0, |i| i.map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_was_opened_and_stays_bounded() {
        let opened = Opened::default();
        assert_eq!(opened.get(&1), None);
        opened.put(&1, Rc::from("token-1"));
        assert_eq!(opened.get(&1).as_deref(), Some("token-1"));
        for k in 0..MAX_ENTRIES as u128 + 10 {
            opened.put(&(k + 2), Rc::from("t"));
        }
        assert!(opened.len() <= MAX_ENTRIES);
        let big: Rc<str> = Rc::from("x".repeat(MAX_BYTES / 2 + 1));
        opened.put(&u128::MAX, big.clone());
        opened.put(&(u128::MAX - 1), big);
        assert_eq!(opened.len(), 1, "the bytes bound empties it");
    }
}
