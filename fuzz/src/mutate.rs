//! Byte-level mutations of an input: the classic set of a mutation fuzzer,
//! aimed at length fields and sizes (interesting integers) as much as at
//! structure (ranges inserted, deleted, duplicated, spliced).

use crate::rng::Rng;

/// Inputs never grow beyond this, so a campaign's own memory stays small.
pub const MAX_INPUT: usize = 1 << 20;

/// Values that sit on the edges of sizes and counts.
const INTERESTING: [u64; 14] =
    [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 40, u64::MAX];

/// Numbers written as text, for the sizes of text formats.
const NUMBERS: [&[u8]; 5] = [b"0", b"-1", b"4294967296", b"99999999999999999999", b"1e308"];

/// Applies one random mutation to `input`; `other` is a second corpus input
/// for splicing.
pub fn mutate_once(input: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    let len = input.len();
    match rng.below(11) {
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input[at] = *rng.pick(&[0u8, 1, 0x7f, 0x80, 0xff]);
        }
        2 if len > 0 => {
            let value = *rng.pick(&INTERESTING);
            let width = *rng.pick(&[2usize, 4, 8]);
            let at = rng.below(len);
            let bytes = value.to_le_bytes();
            for (i, byte) in bytes[..width].iter().enumerate() {
                if let Some(slot) = input.get_mut(at + i) {
                    *slot = *byte;
                }
            }
        }
        3 if len > 0 => {
            let at = rng.below(len);
            input[at] = rng.next_u64() as u8;
        }
        4 => {
            let at = rng.below(len + 1);
            let count = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..count).map(|_| rng.next_u64() as u8).collect();
            input.splice(at..at, bytes);
        }
        5 if len > 0 => {
            let at = rng.below(len);
            let count = 1 + rng.below((len - at).min(64));
            input.drain(at..at + count);
        }
        6 if len > 0 => {
            let from = rng.below(len);
            let count = 1 + rng.below((len - from).min(256));
            let to = rng.below(len + 1);
            let copy = input[from..from + count].to_vec();
            input.splice(to..to, copy);
        }
        7 if len > 0 => input.truncate(rng.below(len)),
        8 if !other.is_empty() => {
            let keep = rng.below(len + 1);
            let from = rng.below(other.len());
            input.truncate(keep);
            input.extend_from_slice(&other[from..]);
        }
        9 if len > 0 => {
            let at = rng.below(len);
            let delta = 1 + rng.below(35) as u8;
            input[at] = if rng.below(2) == 0 { input[at].wrapping_add(delta) } else { input[at].wrapping_sub(delta) };
        }
        _ => {
            // An ASCII digit run changed: text formats (headers, RON) carry sizes as text.
            let start = rng.below(len);
            if let Some(at) = (0..len).map(|i| (start + i) % len).find(|&i| input[i].is_ascii_digit()) {
                let digits = *rng.pick(&NUMBERS);
                input.splice(at..at + 1, digits.iter().copied());
            }
        }
    }
    input.truncate(MAX_INPUT);
}

/// One to four stacked mutations.
pub fn mutate(input: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    for _ in 0..1 + rng.below(4) {
        mutate_once(input, other, rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic_and_bounded() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut input = b"\x93NUMPY header 123".to_vec();
            for _ in 0..10_000 {
                mutate(&mut input, b"other input 42", &mut rng);
                assert!(input.len() <= MAX_INPUT);
            }
            input
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
