//! Field tables and content properties: Leveret's iterative nesting check against
//! amq-protocol's parser, differentially. A table the check passes must parse to exactly the
//! bytes the check walked and re-encode to a table the check passes; a shallow input the check
//! calls malformed must not parse. (Deep inputs go to amq-protocol only once the check has
//! bounded them: its parser recurses.)
#![no_main]

use amq_protocol::types::parsing::parse_field_table;
use leveret::protocol::nesting::{check_properties, check_table, NestingError};
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
});
