//! Any bytes as an industrial-protocol payload, in both directions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use normwatch_model::{IcsCounts, IcsProto};
use normwatch_sensor::ics::inspect;

fuzz_target!(|data: &[u8]| {
    for proto in IcsProto::ALL {
        let mut c = IcsCounts::default();
        inspect(proto, data, true, &mut c);
        inspect(proto, data, false, &mut c);
    }
});
