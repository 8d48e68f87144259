//! A small, fast random stream per row (SplitMix64), so rows do not depend on generation order.

/// SplitMix64 seeded from (seed, table, row).
pub(crate) struct Rng(u64);

impl Rng {
    /// Returns the stream of one row of one table.
    pub fn for_row(seed: u64, table: u64, row: u64) -> Self {
        let mut rng = Self(seed ^ table.rotate_left(56) ^ row.wrapping_mul(0xD1B5_4A32_D192_ED03));
        rng.next();
        rng
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; bias is negligible for these ranges).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Random letters and digits, `min..=max` long.
    pub fn text(&mut self, min: u64, max: u64) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let len = self.range(min, max);
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    /// A phone number whose country code follows the nation, as in TPC-H: `NN-NNN-NNN-NNNN`.
    pub fn phone(&mut self, nation: usize) -> String {
        format!(
            "{}-{}-{}-{}",
            10 + nation,
            self.range(100, 999),
            self.range(100, 999),
            self.range(1000, 9999)
        )
    }
}
