//! The configuration file parser (nom) on arbitrary text: it answers a config or a located
//! error, and a config it answers renders to text it parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = leveret::config::parse("fuzz.conf", text) {
        let rendered = config.render();
        assert!(
            leveret::config::parse("rendered.conf", &rendered).is_ok(),
            "the rendering of a parsed config does not parse: {rendered}"
        );
    }
});
