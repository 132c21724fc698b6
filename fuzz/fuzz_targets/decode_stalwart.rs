//! Decodes arbitrary bytes as a Stalwart bus message (for 0.15.5 and 0.16.18) and as a canonical Stalwart event: must
//! never panic or allocate from a declared length, and whatever decodes must re-encode to the same events.

#![no_main]

use agora::stalwart::{
    decode_batch, decode_canonical, encode_batch, encode_canonical, StalwartVersion, MAX_BATCH_EVENTS,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for version in [StalwartVersion::v0_15(5), StalwartVersion::v0_16(18)] {
        if let Ok(batch) = decode_batch(version, data) {
            if let Some(error) = &batch.error {
                assert!(error.offset <= data.len());
            }
            for chunk in batch.events.chunks(MAX_BATCH_EVENTS) {
                let again = encode_batch(version, batch.node_id, chunk).expect("decoded events are supported");
                let back = decode_batch(version, &again).expect("node id");
                assert_eq!(back.events, chunk);
                assert!(back.error.is_none());
            }
        }
    }
    if let Ok(event) = decode_canonical(data) {
        let mut out = Vec::new();
        encode_canonical(&event, &mut out);
        assert_eq!(decode_canonical(&out), Ok(event));
    }
});
