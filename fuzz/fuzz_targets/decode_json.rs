//! Any bytes as a JSON request body of any operation: decoding and validation must return
//! a value or an AWS error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_gateway::{value, validate, Operation};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let operation = Operation::ALL[usize::from(selector) % Operation::ALL.len()];
    if let Ok(mut input) = value::decode_json(body) {
        let _ = validate::check_input(operation.name(), &mut input);
    }
});
