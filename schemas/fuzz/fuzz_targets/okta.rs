#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| schemas_fuzz::check(schemas::Format::Okta, data));
