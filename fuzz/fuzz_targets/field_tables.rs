//! Field tables and content properties: Leveret's iterative nesting check against
//! amq-protocol's parser, differentially. A table the check passes must parse to exactly the
//! bytes the check walked and re-encode to a table the check passes; a shallow input the check
//! calls malformed must not parse. (Deep inputs go to amq-protocol only once the check has
//! bounded them: its parser recurses.) Content properties go through the BCC stripping and the
//! UTF-8 mending a publish's header gets. The wire-order key reader (`top_level_keys`, for a
//! declare's arguments) must name exactly the keys amq-protocol parses, in the bytes' order.
#![no_main]

use amq_protocol::types::parsing::parse_field_table;
use leveret::protocol::nesting::{
    check_properties, check_table, strip_header, top_level_keys, utf8_properties, NestingError,
};
use leveret::protocol::headers::{string_header, with_long_header};
use leveret::protocol::table::{decode_properties, decode_table, encode_table};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match check_table(data) {
        Ok(walked) => {
            if let Ok((rest, table)) = parse_field_table(data) {
                assert_eq!(
                    data.len() - rest.len(),
                    walked,
                    "walked and parsed lengths differ"
                );
                let again = encode_table(&table);
                assert!(
                    check_table(&again).is_ok(),
                    "a re-encoded table fails the check"
                );
                assert!(decode_table(&again).is_some());
                // Every parsed key, and no other, in the order read (duplicates collapse in
                // amq-protocol's map, so compare as sets).
                let keys = top_level_keys(data).expect("a parsed table's keys read");
                let mut wire: Vec<String> = keys;
                wire.sort();
                wire.dedup();
                let mut parsed: Vec<String> = table
                    .inner()
                    .keys()
                    .map(|k| k.as_str().to_owned())
                    .collect();
                parsed.sort();
                assert_eq!(wire, parsed, "wire-order keys differ from the parsed ones");
            }
        }
        Err(NestingError::Malformed) if data.len() < 2048 => {
            // At most ~400 levels fit in 2 KB: safe for amq-protocol's recursion here.
            assert!(
                parse_field_table(data).is_err(),
                "amq-protocol parses what the check calls malformed"
            );
        }
        Err(_) => {}
    }
    if check_properties(data).is_ok() {
        let _ = decode_properties(data);
    }
    // Never a panic, whatever the bytes.
    let _ = top_level_keys(data);
    // BCC stripping (as a publish's content header is stored): what comes out has no such
    // header left, is shorter by exactly what was cut, and decodes wherever the input did.
    if let Some(stripped) = strip_header(data, "BCC") {
        assert!(stripped.len() < data.len(), "nothing was cut");
        assert!(
            strip_header(&stripped, "BCC").is_none(),
            "a BCC header survived stripping"
        );
        if let Some(before) = decode_properties(data) {
            let after = decode_properties(&stripped).expect("stripped properties decode");
            let before_headers = before.headers().clone().unwrap_or_default();
            let after_headers = after.headers().clone().unwrap_or_default();
            let expected: Vec<_> = before_headers
                .inner()
                .iter()
                .filter(|(k, _)| k.as_str() != "BCC")
                .collect();
            let got: Vec<_> = after_headers.inner().iter().collect();
            assert_eq!(got, expected);
            assert_eq!(after.message_id(), before.message_id());
            assert_eq!(after.delivery_mode(), before.delivery_mode());
        }
    }
    // A header set on the wire bytes (a stream's x-stream-offset, a quorum queue's
    // x-delivery-count): wherever the input decodes, the output decodes to the same properties
    // with that one header set; and reading a string header agrees with a full decode.
    if let Some(before) = decode_properties(data) {
        let out = with_long_header(data, "x-stream-offset", -7)
            .expect("decodable properties take a header");
        let after = decode_properties(&out).expect("a header set on decodable properties decodes");
        let mut expected = before.headers().clone().unwrap_or_default();
        expected.insert(
            "x-stream-offset".into(),
            amq_protocol::types::AMQPValue::LongLongInt(-7),
        );
        assert_eq!(after.headers().clone().unwrap_or_default(), expected);
        assert_eq!(after.message_id(), before.message_id());
        assert_eq!(after.timestamp(), before.timestamp());
        assert_eq!(after.content_type(), before.content_type());
        let wanted = before
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-filter-value").cloned())
            .and_then(|v| leveret::protocol::table::as_str(&v).map(|s| s.into_owned()));
        assert_eq!(string_header(data, "x-stream-filter-value"), wanted);
    } else {
        let _ = with_long_header(data, "x-stream-offset", 1);
        let _ = string_header(data, "x-stream-filter-value");
    }
    // UTF-8 mending: what it answers, amq-protocol parses (bounded first: its parser recurses).
    if let Some(mended) = utf8_properties(data) {
        if check_properties(&mended).is_ok() {
            assert!(
                amq_protocol::protocol::basic::parse_properties(&mended[..]).is_ok(),
                "mended properties do not parse"
            );
        }
    }
});
