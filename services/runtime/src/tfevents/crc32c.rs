//! CRC-32C (Castagnoli), the checksum of TFRecord framing, and TensorFlow's
//! "mask" over it.
//!
//! A 256-entry table built at compile time, one byte per step: event files
//! are kilobytes to megabytes, so this is never the bottleneck and needs no
//! dependency or CPU feature detection. The mask exists because a CRC of data
//! that itself contains CRCs is weak; TensorFlow rotates and offsets it.

/// The Castagnoli polynomial 0x1EDC6F41, bit-reflected.
const POLYNOMIAL_REFLECTED: u32 = 0x82F6_3B78;

/// The constant TensorFlow adds after rotating a CRC (`kMaskDelta`).
const MASK_DELTA: u32 = 0xA282_EAD8;

const TABLE: [u32; 256] = build_table();

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLYNOMIAL_REFLECTED } else { crc >> 1 };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// The CRC-32C of `data` (initial value and final xor 0xFFFFFFFF, reflected).
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    let crc = data
        .iter()
        .fold(!0u32, |crc, &byte| TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8));
    !crc
}

/// TensorFlow's masked CRC: `((crc >> 15) | (crc << 17)) + 0xa282ead8`, wrapping.
pub(crate) fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(MASK_DELTA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_values() {
        // The standard check value, and the iSCSI vectors of RFC 3720 B.4.
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn masked_crc32c_matches_tensorboards_implementation() {
        // From tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c.
        assert_eq!(masked_crc32c(b""), 0xA282_EAD8);
        assert_eq!(masked_crc32c(&[0u8; 8]), 0x0798_0329);
        assert_eq!(masked_crc32c(b"hello"), 0x191C_1FBB);
    }
}
