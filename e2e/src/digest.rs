//! A backend that answers only after the client has finished sending: it reads to EOF,
//! then writes the SHA-256 of everything it read and the byte count, then closes.
//!
//! A reply can therefore only arrive if the client's FIN crossed every hop in front of
//! it, and a correct reply proves every byte arrived intact and in order.

use std::io::{Read, Write};
use std::net::Shutdown;

use sha2::{Digest, Sha256};

use crate::serve_each;

/// `size` pseudo-random bytes (xorshift64*), different for every `seed`: payloads that
/// differ per client, so a crossed stream cannot go unnoticed.
pub fn payload(seed: u64, size: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (seed + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Sends `data` through `port` to a [`DigestServer`] and checks its answer; the error
/// says what came back instead.
pub fn exchange_checked(port: u16, data: &[u8], limit: std::time::Duration) -> Result<(), String> {
    match crate::exchange_within(port, data, limit) {
        Ok(reply) if reply == digest_reply(data) => Ok(()),
        Ok(reply) => Err(format!("wrong reply ({} bytes): {:02x?}", reply.len(), reply)),
        Err(e) => Err(e.to_string()),
    }
}

/// What [`DigestServer`] answers for `data`: 32 bytes of SHA-256, then the length as a
/// big-endian u64.
pub fn digest_reply(data: &[u8]) -> Vec<u8> {
    let mut reply = Sha256::digest(data).to_vec();
    reply.extend_from_slice(&(data.len() as u64).to_be_bytes());
    reply
}

/// The digest server on a loopback port (a thread per connection).
pub struct DigestServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl DigestServer {
    /// Starts it; it lives until the test process ends.
    pub fn start() -> DigestServer {
        let port = serve_each(|mut stream| {
            let mut hasher = Sha256::new();
            let mut length = 0u64;
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&buffer[..n]);
                        length += n as u64;
                    }
                    // No EOF, no answer: the client sees the connection die.
                    Err(_) => return,
                }
            }
            let mut reply = hasher.finalize().to_vec();
            reply.extend_from_slice(&length.to_be_bytes());
            let _ = stream.write_all(&reply);
            let _ = stream.shutdown(Shutdown::Write);
        });
        DigestServer { port }
    }
}
