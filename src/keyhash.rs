//! Key hashing for the in-process caches on the request path, whose keys nobody outside
//! chooses: session keys (random, looked up only after the cookie's MAC verified) and
//! addresses of shared identities. SipHash's resistance to chosen-key flooding buys nothing
//! there and costs about a tenth of a microsecond per lookup.

use std::hash::{BuildHasher, Hasher};

/// Builds [`KeyHasher`]s (for `moka`'s `build_with_hasher`).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHash;

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Multiply-rotate over 8-byte words, finished with MurmurHash3's 64-bit mixer so that every
/// output bit depends on every input bit (aligned addresses have zero low bits).
#[derive(Debug)]
pub struct KeyHasher(u64);

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ (rest.len() as u64) << 59);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::KeyHash;

    #[test]
    fn spreads_aligned_addresses_and_random_keys_over_the_low_bits() {
        // 4,096 keys into 1,024 buckets by the low 10 bits: a fair hash fills nearly all.
        let addresses: HashSet<u64> = (0..4096usize)
            .map(|i| KeyHash.hash_one(0x7f00_0000_0000 + i * 64) & 1023)
            .collect();
        assert!(addresses.len() > 950, "{} buckets", addresses.len());
        let keys: HashSet<u64> = (0..4096u32)
            .map(|i| {
                let mut key = [0u8; 32];
                key[..4].copy_from_slice(&i.to_le_bytes());
                KeyHash.hash_one(key) & 1023
            })
            .collect();
        assert!(keys.len() > 950, "{} buckets", keys.len());
        assert_ne!(KeyHash.hash_one([1u8; 32]), KeyHash.hash_one([2u8; 32]));
    }
}
