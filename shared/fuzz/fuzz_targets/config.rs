//! Any text given as a configuration, for either role, yields a config or a located
//! error: never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strait::config::{Config, Role};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    for role in [Role::Egress, Role::Ingress] {
        if let Err(e) = Config::parse(Path::new("fuzz.toml"), text.clone(), role) {
            let _ = e.to_string();
        }
    }
});
