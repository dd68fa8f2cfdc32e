//! SHA-1 compression and HMAC completion from precomputed pad states, `no_std` and
//! allocation-free so the XDP program can verify CARP digests without ever holding the
//! password: the agent hashes `key ^ ipad` and `key ^ opad` once (one block each) and hands
//! the XDP program only the two resulting states.

use crate::wire::auth;

/// SHA-1 initial state (FIPS 180-4 section 5.3.1).
pub const H0: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];
/// SHA-1 block size in bytes.
pub const BLOCK_LEN: usize = 64;
/// SHA-1 digest size in bytes.
pub const DIGEST_LEN: usize = 20;
/// Longest message that still finishes in one block after a pad block: the 0x80 byte and
/// the 8-byte length must fit behind it.
pub const MAX_ONE_BLOCK_MSG: usize = BLOCK_LEN - 9;

/// The SHA-1 states after the HMAC inner (`key ^ 0x36`) and outer (`key ^ 0x5c`) pad blocks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PadStates {
    pub inner: [u32; 5],
    pub outer: [u32; 5],
}

/// The working memory of [`CounterHmac::digest`], in the XDP program a per-CPU map's:
/// on the BPF stack, 512 bytes for a whole call chain, it would sit under every call
/// that reaches the HMAC.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Work {
    /// The inner hash's last blocks, then the outer one.
    pub blocks: [[u8; BLOCK_LEN]; 2],
    /// The state being compressed.
    pub state: [u32; 5],
    /// [`compress`]'s message schedule.
    pub schedule: [u32; 16],
}

impl Default for Work {
    fn default() -> Self {
        Self {
            blocks: [[0; BLOCK_LEN]; 2],
            state: [0; 5],
            schedule: [0; 16],
        }
    }
}

/// Runs the SHA-1 compression function over one block (FIPS 180-4 section 6.1.2), its
/// message schedule kept as a rolling window of 16 words in `w`.
// In BPF a call of its own: the verifier walks it per call.
#[cfg_attr(target_arch = "bpf", inline(never))]
pub fn compress(state: &mut [u32; 5], block: &[u8; BLOCK_LEN], w: &mut [u32; 16]) {
    let mut i = 0;
    while i < 16 {
        w[i] = u32::from_be_bytes([
            block[4 * i],
            block[4 * i + 1],
            block[4 * i + 2],
            block[4 * i + 3],
        ]);
        i += 1;
    }
    let [mut a, mut b, mut c, mut d, mut e] = *state;
    let mut t = 0;
    while t < 80 {
        let wt = if t < 16 {
            w[t & 15]
        } else {
            let x =
                (w[(t + 13) & 15] ^ w[(t + 8) & 15] ^ w[(t + 2) & 15] ^ w[t & 15]).rotate_left(1);
            w[t & 15] = x;
            x
        };
        let (f, k) = match t {
            0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
            20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
            40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
            _ => (b ^ c ^ d, 0xca62_c1d6),
        };
        let tmp = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(k)
            .wrapping_add(wt);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = tmp;
        t += 1;
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
    state[4] = state[4].wrapping_add(e);
}

/// The big-endian bit length that ends the last block of a message of `msg_len` bytes
/// hashed after one pad block.
#[inline(always)]
pub const fn length_trailer(msg_len: usize) -> [u8; 8] {
    (((BLOCK_LEN + msg_len) as u64) * 8).to_be_bytes()
}

/// The block that finishes a message of at most [`MAX_ONE_BLOCK_MSG`] bytes hashed after
/// one pad block: the message, 0x80, zeros, the bit length. `None` for longer messages.
pub fn last_block(msg: &[u8]) -> Option<[u8; BLOCK_LEN]> {
    if msg.len() > MAX_ONE_BLOCK_MSG {
        return None;
    }
    let mut block = [0u8; BLOCK_LEN];
    block[..msg.len()].copy_from_slice(msg);
    block[msg.len()] = 0x80;
    block[BLOCK_LEN - 8..].copy_from_slice(&length_trailer(msg.len()));
    Some(block)
}

#[inline(always)]
fn digest(state: &[u32; 5]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    let mut i = 0;
    while i < 5 {
        let w = state[i].to_be_bytes();
        out[4 * i] = w[0];
        out[4 * i + 1] = w[1];
        out[4 * i + 2] = w[2];
        out[4 * i + 3] = w[3];
        i += 1;
    }
    out
}

impl PadStates {
    /// The states after `key ^ ipad` and `key ^ opad` (RFC 2104), for keys of at most one
    /// block, which HMAC zero-pads.
    pub fn from_key(key: &[u8]) -> Option<Self> {
        if key.len() > BLOCK_LEN {
            return None;
        }
        let mut ipad = [0x36u8; BLOCK_LEN];
        let mut opad = [0x5cu8; BLOCK_LEN];
        for (i, k) in key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let (mut inner, mut outer, w) = (H0, H0, &mut [0; 16]);
        compress(&mut inner, &ipad, w);
        compress(&mut outer, &opad, w);
        Some(Self { inner, outer })
    }

    /// HMAC-SHA1 of a message of at most [`MAX_ONE_BLOCK_MSG`] bytes.
    pub fn hmac(&self, msg: &[u8]) -> Option<[u8; DIGEST_LEN]> {
        let mut work = Work::default();
        work.blocks[0] = last_block(msg)?;
        Some(self.finish(&mut work, 1))
    }

    /// Finishes the inner hash with the first `count` (1 or 2) of `work.blocks`, already
    /// padded, then the outer hash in the first block, all of it in `work`.
    #[cfg_attr(target_arch = "bpf", inline(never))]
    pub fn finish(&self, work: &mut Work, count: u8) -> [u8; DIGEST_LEN] {
        let Work {
            blocks,
            state,
            schedule,
        } = work;
        *state = self.inner;
        compress(state, &blocks[0], schedule);
        if count > 1 {
            compress(state, &blocks[1], schedule);
        }
        let block = &mut blocks[0];
        block.fill(0);
        block[..DIGEST_LEN].copy_from_slice(&digest(state));
        block[DIGEST_LEN] = 0x80;
        block[BLOCK_LEN - 8..].copy_from_slice(&length_trailer(DIGEST_LEN));
        *state = self.outer;
        compress(state, block, schedule);
        digest(state)
    }
}

/// Everything needed to compute HMAC-SHA1(key, prefix ‖ suffix) for any suffix of a fixed
/// length, without the key: CARP's digest (`carp_hmac_generate`) over a prefix that is
/// constant per VHID and a suffix from the advert ([`crate::wire::auth`]: the counter, or
/// in strict mode more). The inner state has absorbed the ipad block and every whole
/// 64-byte block of the prefix; `blocks` holds the rest of the prefix, room for the suffix
/// at `suffix_at`, the padding and the bit length, in one or two blocks. So the XDP
/// program verifies a VHID with any number of VIPs with one fixed-size copy, a few byte
/// writes and two or three compressions.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterHmac {
    pub pads: PadStates,
    pub blocks: [[u8; BLOCK_LEN]; 2],
    /// Offset of the suffix's first byte in `blocks` (below [`BLOCK_LEN`]).
    pub suffix_at: u8,
    /// Blocks in use: 1 or 2.
    pub block_count: u8,
    /// Suffix bytes hashed: [`auth::BSD_SUFFIX`] or [`auth::STRICT_SUFFIX`].
    pub suffix_len: u8,
    pub _pad: u8,
}

impl Default for CounterHmac {
    fn default() -> Self {
        Self {
            pads: PadStates::default(),
            blocks: [[0; BLOCK_LEN]; 2],
            suffix_at: 0,
            block_count: 1,
            suffix_len: auth::BSD_SUFFIX,
            _pad: 0,
        }
    }
}

impl CounterHmac {
    /// Prepares `prefix` under `key` (a key of at most one block, as CARP passwords are)
    /// for suffixes of `suffix_len` bytes (at most [`auth::SUFFIX_MAX`]).
    pub fn new(key: &[u8], prefix: &[u8], suffix_len: u8) -> Option<Self> {
        if usize::from(suffix_len) > auth::SUFFIX_MAX {
            return None;
        }
        let mut pads = PadStates::from_key(key)?;
        let whole = prefix.len() / BLOCK_LEN * BLOCK_LEN;
        for block in prefix[..whole].chunks_exact(BLOCK_LEN) {
            let mut b = [0u8; BLOCK_LEN];
            b.copy_from_slice(block);
            compress(&mut pads.inner, &b, &mut [0; 16]);
        }
        let tail = &prefix[whole..];
        let msg_end = tail.len() + usize::from(suffix_len);
        let block_count = if msg_end < BLOCK_LEN - 8 { 1 } else { 2 };
        let mut flat = [0u8; 2 * BLOCK_LEN];
        flat[..tail.len()].copy_from_slice(tail);
        flat[msg_end] = 0x80;
        let end = block_count * BLOCK_LEN;
        flat[end - 8..end].copy_from_slice(&length_trailer(msg_end + whole));
        let mut blocks = [[0u8; BLOCK_LEN]; 2];
        blocks[0].copy_from_slice(&flat[..BLOCK_LEN]);
        blocks[1].copy_from_slice(&flat[BLOCK_LEN..]);
        Some(Self {
            pads,
            blocks,
            suffix_at: tail.len() as u8,
            block_count: block_count as u8,
            suffix_len,
            _pad: 0,
        })
    }

    /// Whether it verifies strict digests, which cover the whole header and the source
    /// and carry a counter that grows with every advert ([`auth::STRICT_SUFFIX`] bytes).
    #[inline(always)]
    pub fn is_strict(&self) -> bool {
        self.suffix_len == auth::STRICT_SUFFIX
    }

    /// The digest over the first `suffix_len` bytes of `suffix`, computed in `work` (the
    /// XDP program's scratch memory).
    #[inline(always)]
    pub fn digest(&self, suffix: &[u8; auth::SUFFIX_MAX], work: &mut Work) -> [u8; DIGEST_LEN] {
        work.blocks = self.blocks;
        let at = usize::from(self.suffix_at);
        let len = usize::from(self.suffix_len);
        let mut i = 0;
        while i < auth::SUFFIX_MAX && i < len {
            // Masked so the verifier sees the write stay inside the two blocks.
            let pos = (at + i) & (2 * BLOCK_LEN - 1);
            work.blocks[pos / BLOCK_LEN][pos % BLOCK_LEN] = suffix[i];
            i += 1;
        }
        self.pads.finish(work, self.block_count)
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` arrays of u32, no padding, every bit pattern valid.
unsafe impl aya::Pod for PadStates {}
#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` arrays and bytes with explicit padding, every bit pattern valid.
unsafe impl aya::Pod for CounterHmac {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn compress_equals_the_sha1_crate(state: [u32; 5], block in proptest::array::uniform32(any::<u8>()), block2 in proptest::array::uniform32(any::<u8>())) {
            let mut b = [0u8; 64];
            b[..32].copy_from_slice(&block);
            b[32..].copy_from_slice(&block2);
            let (mut ours, mut theirs) = (state, state);
            compress(&mut ours, &b, &mut [0; 16]);
            ::sha1::block_api::compress(&mut theirs, &[b]);
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn hmac_from_pad_states_equals_the_hmac_crate(key in proptest::collection::vec(any::<u8>(), 0..64), msg in proptest::collection::vec(any::<u8>(), 0..=MAX_ONE_BLOCK_MSG)) {
            use hmac::{Hmac, KeyInit, Mac};
            let mut mac = Hmac::<::sha1::Sha1>::new_from_slice(&key).unwrap();
            mac.update(&msg);
            let expected: [u8; 20] = mac.finalize().into_bytes().into();
            prop_assert_eq!(PadStates::from_key(&key).unwrap().hmac(&msg), Some(expected));
        }
    }

    fn reference(key: &[u8], prefix: &[u8], suffix: &[u8]) -> [u8; DIGEST_LEN] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<::sha1::Sha1>::new_from_slice(key).unwrap();
        mac.update(prefix);
        mac.update(suffix);
        mac.finalize().into_bytes().into()
    }

    proptest! {
        /// Every prefix length, including those that put the suffix across a block
        /// boundary or need a second final block, for both suffix lengths.
        #[test]
        fn counter_hmac_equals_the_hmac_crate(key in proptest::collection::vec(any::<u8>(), 0..20), prefix in proptest::collection::vec(any::<u8>(), 0..400), suffix: [u8; auth::SUFFIX_MAX], strict: bool) {
            let len = if strict { auth::STRICT_SUFFIX } else { auth::BSD_SUFFIX };
            let prepared = CounterHmac::new(&key, &prefix, len).unwrap();
            prop_assert_eq!(
                prepared.digest(&suffix, &mut Work::default()),
                reference(&key, &prefix, &suffix[..usize::from(len)])
            );
        }
    }

    #[test]
    fn counter_hmac_at_every_boundary() {
        let suffix: [u8; auth::SUFFIX_MAX] = core::array::from_fn(|i| 0xf0 ^ i as u8);
        for len in 0..=2 * BLOCK_LEN + 1 {
            let prefix: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for (suffix_len, one_block_below) in [(auth::BSD_SUFFIX, 48), (auth::STRICT_SUFFIX, 28)]
            {
                let prepared = CounterHmac::new(b"love", &prefix, suffix_len).unwrap();
                assert_eq!(prepared.is_strict(), suffix_len == auth::STRICT_SUFFIX);
                assert_eq!(
                    prepared.block_count,
                    if len % 64 < one_block_below { 1 } else { 2 },
                    "{len}"
                );
                assert_eq!(
                    prepared.digest(&suffix, &mut Work::default()),
                    reference(b"love", &prefix, &suffix[..usize::from(suffix_len)]),
                    "{len}"
                );
            }
        }
        assert_eq!(CounterHmac::new(b"k", &[], 33), None);
    }

    #[test]
    fn long_messages_are_refused() {
        assert_eq!(
            PadStates::from_key(b"k")
                .unwrap()
                .hmac(&[0; MAX_ONE_BLOCK_MSG + 1]),
            None
        );
    }

    /// The notes' test vector: password "love", vhid 42, VIP 10.1.1.252, counter 1..8.
    #[test]
    fn carp_test_vector() {
        let msg = [2, 1, 42, 10, 1, 1, 252, 1, 2, 3, 4, 5, 6, 7, 8];
        let md = PadStates::from_key(b"love").unwrap().hmac(&msg).unwrap();
        let hex: String = md.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "2fa27458019cf0f5b3213320729727a7c3a7aaff");
    }
}
