//! The floor of the whole-process `sse decode` bench (run.py): the output job of
//! `openai-connector sse decode FILE` without SSE semantics, wasm or a component.
//!
//! Reads FILE in 1 MiB pieces; every line that starts with `data: ` becomes
//! `{"event":"message","data":"<the rest, escaped>","id":null,"retry":null}` (JSON.stringify's
//! escapes, with the CLI's own escaper), written to stdout in large writes. No UTF-8 check, no
//! other fields, no events of several lines: on an OpenAI-shaped stream it writes what `sse
//! decode` writes, with less work. Built by run.py with `rustc -C opt-level=3` (the release
//! profile's level); std only.

use std::io::{Read, Write};

#[path = "../../host-harness/src/json_escape.rs"]
#[allow(dead_code)]
mod json_escape;

const HEAD: &[u8] = b"{\"event\":\"message\",\"data\":\"";
const TAIL: &[u8] = b"\",\"id\":null,\"retry\":null}\n";

fn main() -> std::io::Result<()> {
    let path = std::env::args_os().nth(1).expect("usage: floor FILE");
    let mut input = std::fs::File::open(path)?;
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    // Written by index (see json_escape::escape): grown with zeros, `len` bytes of lines.
    let mut out = vec![0u8; 3 << 20];
    let mut len = 0;
    loop {
        let n = input.read(&mut buf[filled..])?;
        filled += n;
        // Complete lines only; the rest moves to the front.
        let end = match buf[..filled].iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if n == 0 => filled,
            None => {
                if filled == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                }
                continue;
            }
        };
        let mut rest = &buf[..end];
        while !rest.is_empty() {
            let eol = newline(rest).unwrap_or(rest.len());
            let line = &rest[..eol];
            rest = &rest[(eol + 1).min(rest.len())..];
            if let Some(data) = line.strip_prefix(b"data: ") {
                let room = len + HEAD.len() + json_escape::max_escaped_len(data.len()) + TAIL.len();
                if out.len() < room {
                    out.resize(room.max(out.len() * 2), 0);
                }
                out[len..len + HEAD.len()].copy_from_slice(HEAD);
                len = json_escape::escape(data, &mut out, len + HEAD.len());
                out[len..len + TAIL.len()].copy_from_slice(TAIL);
                len += TAIL.len();
            }
        }
        stdout.write_all(&out[..len])?;
        len = 0;
        buf.copy_within(end..filled, 0);
        filled -= end;
        if n == 0 {
            return stdout.flush();
        }
    }
}

/// The first `\n` in `bytes`, eight bytes per step (std has no public memchr).
fn newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().unwrap()) ^ (ONES * u64::from(b'\n'));
        if x.wrapping_sub(ONES) & !x & (ONES << 7) != 0 {
            return word.iter().position(|&b| b == b'\n').map(|i| at + i);
        }
        at += 8;
    }
    words.remainder().iter().position(|&b| b == b'\n').map(|i| at + i)
}
