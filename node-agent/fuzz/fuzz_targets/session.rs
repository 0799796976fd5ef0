//! The full-feature session state machine: any PDUs (decoded from the input) under any of a
//! few negotiated parameter sets, with the engine answering every command, task management
//! function and text request. Nothing panics, and all write memory comes back when the
//! session ends.
#![no_main]

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use spindle_agent::iscsi::params::SessionParams;
use spindle_agent::iscsi::pdu::{Digests, Pdu};
use spindle_agent::iscsi::session::{Action, ScsiOutcome, Session, SessionConfig, WriteMemory};

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let params = SessionParams {
        initial_r2t: flags & 1 != 0,
        immediate_data: flags & 2 != 0,
        data_pdu_in_order: flags & 4 != 0,
        max_recv_data_segment_len: 8192,
        max_send_data_segment_len: 4096,
        max_burst_len: 16384,
        first_burst_len: 8192,
        max_outstanding_r2t: 1 + u32::from(flags >> 6),
        ..SessionParams::default()
    };
    let config = SessionConfig {
        cid: 1,
        exp_cmd_sn: 1,
        stat_sn: 1,
        queue_depth: 8,
        login_window: 2,
        max_write_len: 65536,
        pooled_buffers: 2,
        pooled_bytes: 65536,
    };
    let pool = Arc::new(WriteMemory::new(256 << 10, 128 << 10));
    let mut s = Session::with_memory(params, config, pool.clone());
    let mut buf = BytesMut::from(rest);
    let mut running = Vec::new();
    let mut steps = 0;
    loop {
        let mut out = Vec::new();
        match Pdu::decode_from(&mut buf, Digests::default(), 8192) {
            Ok(Some(pdu)) => s.on_pdu(pdu, &mut out),
            Ok(None) => break,
            Err(e) => {
                let mut bhs = [0u8; 48];
                if let Some(h) = buf.get(..48) {
                    bhs.copy_from_slice(h);
                }
                s.on_decode_error(&bhs, &e, &mut out);
                if buf.len() >= 48 {
                    let _ = buf.split_to(48);
                } else {
                    break;
                }
            }
        }
        // The engine: every action answered, the oldest command completing each step.
        while let Some(a) = out.pop() {
            let mut more = Vec::new();
            match a {
                Action::Execute(c) => running.push(c),
                Action::TaskMgmt { id, .. } => s.on_tmf_done(id, 0, &mut more),
                Action::Text { itt, .. } => s.on_text_reply(itt, Bytes::new(), &mut more),
                Action::Send(_) | Action::Abort { .. } | Action::Close => {}
            }
            out.extend(more);
        }
        if !running.is_empty() {
            let c = running.remove(0);
            let outcome = ScsiOutcome {
                status: (steps % 3 == 2) as u8 * 2,
                data_in: Bytes::from(vec![0; (c.read_len as usize).min(20000)]),
                sense: if steps % 3 == 2 { vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0] } else { Vec::new() },
                data_out_len: None,
            };
            let mut more = Vec::new();
            s.on_scsi_done(c.task, outcome, &mut more);
            s.on_memory(&mut more);
        }
        steps += 1;
        if s.is_closed() || steps > 4096 {
            break;
        }
    }
    for c in running {
        let mut out = Vec::new();
        s.on_scsi_done(c.task, ScsiOutcome::default(), &mut out);
    }
    drop(s);
    assert_eq!(pool.used(), 0, "write memory not given back when the session ended");
});
