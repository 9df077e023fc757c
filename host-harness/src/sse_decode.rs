//! `openai-connector sse decode [FILE]` (cli.md): the input is fed to the component's decoder
//! as it is read, and what each piece of input completes is written at once.
//!
//! Input and output are plain blocking reads and writes: the command does nothing else
//! meanwhile, and tokio's file and stdio types hand every call to a blocking thread and copy
//! the bytes on the way. One JSON line per event is written by a second thread, so that
//! escaping the lines of a batch overlaps with the component decoding the next
//! (benches/RESULTS.md, "`sse decode`, whole process").

use crate::Fatal;
use anyhow::Context as _;
use openai_connector::sse::Event;
use openai_connector_harness::event_lines::EventLines;
use openai_connector_harness::runtime::{EventSpans, Instance, SpanEvent, SseDecoder};
use openai_connector_harness::{Harness, OutboundPolicy};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, SyncSender};

/// How much input is read and fed to the component at a time (at most: a pipe gives what it
/// has). Large enough that a call's cost is small against the bytes it carries, small enough
/// that a batch, its copy in the guest and its lines stay in the cache; 64 KiB to 512 KiB
/// measured alike (benches/RESULTS.md).
const READ_BYTES: usize = 128 * 1024;

/// `sse decode`, or `sse decode --chat` when `chat`.
pub(crate) async fn run(
    harness: &Harness,
    file: Option<&Path>,
    chat: bool,
    max_event_bytes: u32,
) -> Result<u8, Fatal> {
    let input: Box<dyn Read> = match file {
        Some(path) => Box::new(
            std::fs::File::open(path)
                .with_context(|| format!("{}: cannot open", path.display()))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    let instance = harness
        .instantiate(std::sync::Arc::new(OutboundPolicy::deny_all()))
        .await?;
    if chat {
        decode_chat(instance, input, max_event_bytes).await
    } else {
        decode_events(instance, input, max_event_bytes).await
    }
}

/// Reads the next piece of input into `buf`; `None` at the end.
fn read_some(input: &mut dyn Read, buf: &mut [u8]) -> Result<Option<usize>, Fatal> {
    loop {
        match input.read(buf) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("cannot read the input")
                    .into());
            }
        }
    }
}

/// Writes `bytes` to `stdout` now.
fn write_out(stdout: &mut impl Write, bytes: &[u8]) -> anyhow::Result<()> {
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("cannot write the output")
}

/// What the decoding side hands the writing thread.
enum Decoded {
    /// A batch of input (its first `len` bytes) and the spans the component returned for it.
    Batch {
        input: Vec<u8>,
        len: usize,
        spans: EventSpans,
    },
    /// The events `finish` returned.
    Ended(Vec<Event>),
}

/// How feeding the component ended.
enum Fed {
    /// The input ended and every event was handed over.
    Done,
    /// The component stopped decoding (C91): its message.
    Refused(String),
    /// The writing thread stopped; its result says why.
    WriterGone,
}

/// One JSON line per event ([`EventLines`]), through `sse.decoder.feed-raw-spans`: three values
/// per call instead of a record per event, and the data of most events read from the input
/// buffer it was sent from instead of copied back, and validated once, by the writing thread.
/// This thread reads and calls the component; the writing thread reads the spans against the
/// batch, writes the lines and gives the batch's buffer back (at most three are in use). Every
/// line of the batches before a failure is written before the failure is reported.
async fn decode_events(
    mut instance: Instance,
    mut input: Box<dyn Read>,
    max_event_bytes: u32,
) -> Result<u8, Fatal> {
    let decoder = instance.sse_decoder(max_event_bytes).await?;
    let (to_writer, batches) = std::sync::mpsc::sync_channel(1);
    let (give_back, spare) = std::sync::mpsc::channel();
    let writer = std::thread::Builder::new()
        .name("sse-decode-lines".into())
        .spawn(move || write_lines(&batches, &give_back))
        .context("cannot start the thread that writes the lines")?;
    let fed = feed_all(&mut instance, decoder, &mut *input, &to_writer, &spare).await;
    drop(to_writer);
    let written = writer
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread that writes the lines panicked")));
    match (fed?, written) {
        (_, Err(e)) => Err(e.into()),
        (Fed::Refused(message), Ok(())) => {
            eprintln!("openai-connector: {message}");
            Ok(1)
        }
        (Fed::Done | Fed::WriterGone, Ok(())) => Ok(0),
    }
}

/// Feeds the input to `decoder` batch by batch and hands each result to the writing thread.
async fn feed_all(
    instance: &mut Instance,
    decoder: SseDecoder,
    input: &mut dyn Read,
    to_writer: &SyncSender<Decoded>,
    spare: &Receiver<Vec<u8>>,
) -> Result<Fed, Fatal> {
    loop {
        let mut buf = spare.try_recv().unwrap_or_else(|_| vec![0; READ_BYTES]);
        let Some(len) = read_some(input, &mut buf)? else {
            break;
        };
        let spans = match instance.sse_feed_raw_spans(decoder, &buf[..len]).await? {
            Ok(spans) => spans,
            Err(message) => return Ok(Fed::Refused(message)),
        };
        // Waits while the writing thread is a batch behind.
        let batch = Decoded::Batch {
            input: buf,
            len,
            spans,
        };
        if to_writer.send(batch).is_err() {
            return Ok(Fed::WriterGone);
        }
    }
    let ended = match instance.sse_finish(decoder).await? {
        Ok(events) => events,
        Err(message) => return Ok(Fed::Refused(message)),
    };
    Ok(match to_writer.send(Decoded::Ended(ended)) {
        Ok(()) => Fed::Done,
        Err(_) => Fed::WriterGone,
    })
}

/// The writing thread: the lines of each batch, written as one piece.
fn write_lines(batches: &Receiver<Decoded>, give_back: &Sender<Vec<u8>>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    // A batch's lines: its bytes, a sixth more for the quotes of JSON data, and the envelopes.
    let mut lines = EventLines::with_capacity(READ_BYTES * 3 / 2);
    for decoded in batches {
        match decoded {
            Decoded::Batch { input, len, spans } => {
                for event in spans.events(&input[..len])? {
                    lines.push(&event);
                }
                // The decoding side may have stopped already.
                let _ = give_back.send(input);
            }
            Decoded::Ended(events) => {
                for event in &events {
                    lines.push(&SpanEvent::from(event));
                }
            }
        }
        write_out(&mut stdout, lines.as_bytes())?;
        lines.clear();
    }
    Ok(())
}

/// `--chat`: the delta lines as each piece of input completes them, then the assembled
/// completion, through `sse.chat-decoder` (one call per piece of input). When decoding fails
/// (C91) the completion so far is still written before the error; its `error` names the error
/// that stopped decoding, a stream error (C95, C96) or that one (C131).
async fn decode_chat(
    mut instance: Instance,
    mut input: Box<dyn Read>,
    max_event_bytes: u32,
) -> Result<u8, Fatal> {
    let decoder = instance.chat_decoder(max_event_bytes).await?;
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0; READ_BYTES];
    let mut outcome = Ok(());
    while let Some(n) = read_some(&mut input, &mut buf)? {
        match instance.chat_decoder_feed(decoder, &buf[..n]).await? {
            Ok(lines) => write_out(&mut stdout, &lines)?,
            Err(message) => {
                outcome = Err(message);
                break;
            }
        }
    }
    if outcome.is_ok() {
        // The error of a failure after the last lines comes from here (C91).
        outcome = instance.chat_decoder_finish(decoder).await?;
    }
    let assembled = instance.chat_decoder_completion(decoder).await?;
    write_out(
        &mut stdout,
        &[&b"{\"final\":"[..], &assembled, b"}\n"].concat(),
    )?;
    match outcome {
        Ok(()) => Ok(0),
        Err(message) => {
            eprintln!("openai-connector: {message}");
            Ok(1)
        }
    }
}
