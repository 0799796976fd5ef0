//! Text key=value data (login, negotiation, SendTargets): parsing never panics; parsed pairs
//! encode and parse back to the same pairs; number, boolean and binary values never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spindle_agent::iscsi::text;

fuzz_target!(|input: &[u8]| {
    if let Ok(pairs) = text::parse(input) {
        let again = text::parse(&text::encode(&pairs)).expect("encoded text parses");
        assert_eq!(again, pairs);
        for (_, v) in &pairs {
            let _ = text::parse_number(v);
            let _ = text::parse_bool(v);
            let _ = text::decode_binary(v);
            let _ = text::list(v).count();
        }
    }
});
