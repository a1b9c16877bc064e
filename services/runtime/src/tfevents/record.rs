//! TFRecord framing: how one serialized event sits in an event file.
//!
//! ```text
//! u64 LE  length of data
//! u32 LE  masked CRC-32C of those 8 length bytes
//! [u8]    data (here a protobuf `Event`)
//! u32 LE  masked CRC-32C of data
//! ```
//!
//! Writing goes to any `Write`; reading works on a byte slice, so a corrupt
//! length can never make us allocate or read past the end of the file.

use std::io::{self, Write};

use super::crc32c::masked_crc32c;

const LENGTH_LEN: usize = 8;
const CRC_LEN: usize = 4;

/// Appends one record holding `data` to `out`.
pub(crate) fn write_record(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let length = (data.len() as u64).to_le_bytes();
    out.write_all(&length)?;
    out.write_all(&masked_crc32c(&length).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc32c(data).to_le_bytes())
}

/// Splits the first record off `bytes`: `(its data, the bytes after it)`.
/// Both CRCs are checked; the error says which part is wrong.
pub(crate) fn split_record(bytes: &[u8]) -> Result<(&[u8], &[u8]), &'static str> {
    let (length, rest) = take(bytes, LENGTH_LEN).ok_or("truncated length")?;
    let (length_crc, rest) = take(rest, CRC_LEN).ok_or("truncated length CRC")?;
    if read_u32(length_crc) != masked_crc32c(length) {
        return Err("length CRC mismatch");
    }
    let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
    let length = usize::try_from(length).map_err(|_| "length does not fit in memory")?;
    let (data, rest) = take(rest, length).ok_or("truncated data")?;
    let (data_crc, rest) = take(rest, CRC_LEN).ok_or("truncated data CRC")?;
    if read_u32(data_crc) != masked_crc32c(data) {
        return Err("data CRC mismatch");
    }
    Ok((data, rest))
}

fn take(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= n).then(|| bytes.split_at(n))
}

fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_record(&mut out, data).unwrap();
        out
    }

    #[test]
    fn framing_matches_tensorboards_bytes() {
        // Built with TensorBoard's own Python masked_crc32c and struct.pack.
        assert_eq!(hex(&framed(b"")), "000000000000000029039807d8ea82a2");
        assert_eq!(hex(&framed(b"hello")), "0500000000000000eab2043e68656c6c6fbb1f1c19");
    }

    #[test]
    fn records_split_back_in_order() {
        let mut file = framed(b"first");
        file.extend(framed(b""));
        file.extend(framed(b"third"));
        let (one, rest) = split_record(&file).unwrap();
        let (two, rest) = split_record(rest).unwrap();
        let (three, rest) = split_record(rest).unwrap();
        assert_eq!((one, two, three, rest), (&b"first"[..], &b""[..], &b"third"[..], &b""[..]));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let file = framed(b"a small event");
        for byte in 0..file.len() {
            for bit in 0..8 {
                let mut bad = file.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    split_record(&bad).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn errors_name_the_broken_part() {
        let file = framed(b"hello");
        let flip = |at: usize| {
            let mut bad = file.clone();
            bad[at] ^= 0x01;
            split_record(&bad).unwrap_err()
        };
        assert_eq!(flip(0), "length CRC mismatch");
        assert_eq!(flip(9), "length CRC mismatch");
        assert_eq!(flip(12), "data CRC mismatch");
        assert_eq!(flip(file.len() - 1), "data CRC mismatch");
        assert_eq!(split_record(&file[..5]).unwrap_err(), "truncated length");
        assert_eq!(split_record(&file[..10]).unwrap_err(), "truncated length CRC");
        assert_eq!(split_record(&file[..14]).unwrap_err(), "truncated data");
        assert_eq!(split_record(&file[..file.len() - 1]).unwrap_err(), "truncated data CRC");
    }

    #[test]
    fn a_huge_length_with_a_valid_crc_is_truncation_not_an_allocation() {
        let length = u64::MAX.to_le_bytes();
        let mut file = length.to_vec();
        file.extend(masked_crc32c(&length).to_le_bytes());
        file.extend(b"short");
        assert!(split_record(&file).is_err());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
