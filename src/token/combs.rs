//! The keys that signed recent DPoP proofs, per VM (a worker), with what was precomputed for
//! each ([`crate::token::es256`], [`crate::token::ed25519`]): a client signs all its proofs
//! with one key, so a key that keeps coming back gets a comb (Lim–Lee: `TEETH` teeth
//! `SPACING` bits apart, `2^TEETH − 1` points), and its later proofs cost about a third.
//!
//! A comb costs about two verifications to make, so it is made on a key's [`SIGHTS`]-th proof
//! within the last [`SEEN`] new keys: keys used once or twice (a flood of new keys, an
//! attacker's) never pay for one, and with more than [`SEEN`] keys in turn no key reaches its
//! third sight, so combs are never made only to be pushed out. At most [`KEPT`] combs are
//! kept, the oldest replaced first.

use std::rc::Rc;

/// A comb's teeth and their spacing: bit `i·SPACING + c` of a scalar is tooth `i` of column
/// `c`; the teeth cover 256 bits.
pub const TEETH: usize = 8;
pub const SPACING: usize = 32;
/// Points of a comb: the sums `Σ 2^(i·SPACING)·P` over the bits `i` of `index + 1`.
pub const POINTS: usize = (1 << TEETH) - 1;
/// Combs kept (24 KB each for P-256, 40 KB for Ed25519), keys remembered before their comb,
/// and the proofs a key signs before it gets one.
pub const KEPT: usize = 8;
pub const SEEN: usize = 8;
pub const SIGHTS: u8 = 3;

/// A key as its algorithm encodes it (P-256: x ‖ y; Ed25519: the point, then zeros).
pub type KeyId = [u8; 64];

pub struct Recent<T> {
    kept: Vec<(KeyId, Rc<T>)>,
    next_kept: usize,
    seen: Vec<(KeyId, u8)>,
    next_seen: usize,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self {
            kept: Vec::new(),
            next_kept: 0,
            seen: Vec::new(),
            next_seen: 0,
        }
    }
}

impl<T> Recent<T> {
    /// The comb kept for `id`.
    pub fn get(&self, id: &KeyId) -> Option<Rc<T>> {
        self.kept
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, c)| c.clone())
    }

    /// Counts a proof of `id` (not kept): whether it is the one that earns a comb.
    pub fn sighted(&mut self, id: &KeyId) -> bool {
        if let Some(at) = self.seen.iter().position(|(k, _)| k == id) {
            let Some((_, sights)) = self.seen.get_mut(at) else {
                return false;
            };
            *sights += 1;
            if *sights < SIGHTS {
                return false;
            }
            self.seen.swap_remove(at);
            self.next_seen = self.next_seen.min(self.seen.len());
            return true;
        }
        if self.seen.len() < SEEN {
            self.seen.push((*id, 1));
        } else if let Some(slot) = self.seen.get_mut(self.next_seen) {
            *slot = (*id, 1);
            self.next_seen = (self.next_seen + 1) % SEEN;
        }
        false
    }

    /// Keeps `comb` for `id`, in place of the oldest when [`KEPT`] are kept.
    pub fn keep(&mut self, id: &KeyId, comb: T) -> Rc<T> {
        let comb = Rc::new(comb);
        if self.kept.len() < KEPT {
            self.kept.push((*id, comb.clone()));
        } else if let Some(slot) = self.kept.get_mut(self.next_kept) {
            *slot = (*id, comb.clone());
            self.next_kept = (self.next_kept + 1) % KEPT;
        }
        comb
    }
}

/// Bit `j` of the little-endian 256-bit number `k`.
pub fn bit_le(k: &[u8; 32], j: usize) -> usize {
    usize::from(k.get(j / 8).map_or(0, |v| (v >> (j % 8)) & 1))
}

/// Column `column` of the comb of `k` (little-endian): the index + 1 of its point, 0 for none.
pub fn column(k: &[u8; 32], column: usize) -> usize {
    (0..TEETH).fold(0, |acc, tooth| {
        acc | bit_le(k, tooth * SPACING + column) << tooth
    })
}

/// The sums of a comb from its bases (`bases[i] = 2^(i·SPACING)·P`), with `add`: sum `n` is
/// its highest tooth's base plus the sum of its lower teeth, made before it.
pub fn sums<P: Copy>(bases: &[P; TEETH], add: impl Fn(&P, &P) -> P) -> Vec<P> {
    let mut out: Vec<P> = Vec::with_capacity(POINTS);
    for n in 1..=POINTS {
        let top = (usize::BITS - 1 - n.leading_zeros()) as usize;
        let Some(base) = bases.get(top) else { break };
        let rest = n & !(1 << top);
        let sum = match rest.checked_sub(1).and_then(|i| out.get(i)) {
            Some(lower) => add(lower, base),
            None => *base,
        };
        out.push(sum);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> KeyId {
        [n; 64]
    }

    #[test]
    fn a_key_earns_its_comb_on_its_third_sight_among_the_last_seen() {
        let mut r: Recent<u32> = Recent::default();
        assert!(!r.sighted(&id(1)) && !r.sighted(&id(1)));
        assert!(r.sighted(&id(1)), "third");
        assert!(!r.sighted(&id(1)), "counted again from one");
        // More than SEEN keys in turn: none reaches its third sight.
        for _ in 0..5 {
            for k in 10..10 + SEEN as u8 + 1 {
                assert!(!r.sighted(&id(k)), "{k}");
            }
        }
        // KEPT combs, then one more replaces the oldest.
        for k in 0..KEPT as u8 {
            r.keep(&id(100 + k), u32::from(k));
        }
        assert_eq!(r.get(&id(100)).as_deref(), Some(&0));
        r.keep(&id(200), 9);
        assert!(r.get(&id(100)).is_none());
        assert_eq!(r.get(&id(101)).as_deref(), Some(&1));
        assert_eq!(r.get(&id(200)).as_deref(), Some(&9));
    }

    #[test]
    fn sums_and_columns_rebuild_the_scalar() {
        // With integers for points: base i is 2^(32 i), so sum n - 1 is the number whose
        // bits at 32 i are those of n.
        let bases: [u128; TEETH] = std::array::from_fn(|i| 1u128 << (16 * i));
        let s = sums(&bases, |a, b| a + b);
        assert_eq!(s.len(), POINTS);
        assert_eq!(s[0b1011 - 1], 1 + (1 << 16) + (1 << 48));
        let mut k = [0u8; 32];
        k[0] = 0b1000_0001; // bits 0 and 7
        k[4] = 1; // bit 32: tooth 1 of column 0
        k[31] = 0x80; // bit 255: tooth 7 of column 31
        assert_eq!(column(&k, 0), 0b11);
        assert_eq!(column(&k, 7), 1);
        assert_eq!(column(&k, 31), 1 << 7);
        assert_eq!(column(&k, 5), 0);
    }
}
