//! Decodes arbitrary bytes as a batch and iterates every record: must never panic, and must respect the header count.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = agora::codec::decode_batch(data) {
        let count = reader.header().count;
        let first_seq = reader.header().first_seq;
        let _ = reader.mac();
        let _ = reader.signed_bytes();
        let mut n: u64 = 0;
        for item in reader {
            let seq = match &item {
                Ok(record) => record.seq,
                Err(error) => error.seq,
            };
            assert_eq!(seq, first_seq.wrapping_add(n));
            n += 1;
        }
        assert!(n <= u64::from(count));
    }
});
