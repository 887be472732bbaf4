//! The frame decoder and the per-channel command assembler on arbitrary bytes: every input is
//! decoded until it runs out or is refused, each frame fed to its channel's assembler, and
//! every decoded method encoded back. Any panic is a bug.
#![no_main]

use std::collections::HashMap;

use bytes::BytesMut;
use leveret::protocol::codec::{decode_frame, encode_method};
use leveret::protocol::{CommandAssembler, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let frame_max = match mode % 3 {
        0 => 0,
        1 => 4096,
        _ => 131_072,
    };
    let mut buf = BytesMut::from(rest);
    let mut assemblers: HashMap<u16, CommandAssembler> = HashMap::new();
    while let Ok(Some(frame)) = decode_frame(&mut buf, frame_max) {
        if let Frame::Method(channel, method, _) = &frame {
            let mut out = BytesMut::new();
            encode_method(&mut out, *channel, method);
        }
        let assembler = assemblers
            .entry(frame.channel())
            .or_insert_with(|| CommandAssembler::new(1 << 20));
        if assembler.feed(frame).is_err() {
            assemblers.clear();
        }
    }
});
