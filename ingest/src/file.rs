//! The file source: NDJSON from files or stdin, for replay, gzip-compressed
//! or not (CloudTrail's S3 files are `.json.gz`; gzip is known by its magic
//! bytes, not the name). Same batches as the Kafka source; a rejected line
//! is logged with its file, line number and reason (never its content) and
//! counted.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::GzipDecoder;
use schemas::Origin;
use schemas::decode::Decoder;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader, ReadBuf};
use tokio::sync::mpsc;
use tracing::{Instrument, info_span, warn};

use crate::ack::Ack;
use crate::batcher::BatchBuilder;
use crate::config::IngestConfig;
use crate::kafka::fingerprinter;
use crate::metrics::IngestMetrics;
use crate::{Delivery, RunError};

/// Where replay input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    fn name(&self) -> String {
        match self {
            Input::Stdin => "-".to_string(),
            Input::File(p) => p.display().to_string(),
        }
    }
}

/// Reads inputs in order, one record per line.
pub struct FileSource {
    inputs: Vec<Input>,
    decoder: Decoder,
    max_record_bytes: usize,
    batch_max_records: usize,
    batch_max_bytes: usize,
    metrics: Arc<IngestMetrics>,
}

impl FileSource {
    /// `-` in `paths` means stdin. Format, size limit, batch size and the
    /// fingerprint key come from the `[ingest]` config.
    pub fn new(paths: &[String], config: &IngestConfig, metrics: Arc<IngestMetrics>) -> Self {
        let inputs = paths
            .iter()
            .map(|p| {
                if p == "-" {
                    Input::Stdin
                } else {
                    Input::File(p.into())
                }
            })
            .collect();
        FileSource {
            inputs,
            decoder: config.decoder(fingerprinter(config)),
            max_record_bytes: config.max_record_bytes,
            batch_max_records: config.batch_max_records,
            batch_max_bytes: config.batch_max_bytes,
            metrics,
        }
    }

    /// Reads every input to its end and sends full batches to `output`.
    pub async fn run(self, output: mpsc::Sender<Delivery>) -> Result<(), RunError> {
        let mut builder = BatchBuilder::new(self.decoder.clone(), self.batch_max_records)
            .with_max_bytes(self.batch_max_bytes);
        for input in &self.inputs {
            let name = input.name();
            let span = info_span!("ingest", source = %name);
            async {
                let read_error = |source| RunError::Read {
                    path: name.clone(),
                    source,
                };
                match input {
                    Input::Stdin => {
                        let reader = BufReader::with_capacity(1 << 16, tokio::io::stdin());
                        let reader = decompressed(reader).await.map_err(read_error)?;
                        self.read(reader, &name, &mut builder, &output).await
                    }
                    Input::File(path) => {
                        let file = tokio::fs::File::open(path).await.map_err(read_error)?;
                        let file = Counted {
                            inner: file,
                            metrics: Arc::clone(&self.metrics),
                        };
                        let reader = BufReader::with_capacity(1 << 16, file);
                        let reader = decompressed(reader).await.map_err(read_error)?;
                        self.read(reader, &name, &mut builder, &output).await
                    }
                }
            }
            .instrument(span)
            .await?;
        }
        self.flush(&mut builder, &output).await
    }

    async fn read(
        &self,
        mut reader: impl AsyncBufRead + Unpin,
        name: &str,
        builder: &mut BatchBuilder,
        output: &mpsc::Sender<Delivery>,
    ) -> Result<(), RunError> {
        let topic: Arc<str> = Arc::from(name);
        let mut line = Vec::new();
        let mut number = 0i64;
        loop {
            let read = read_line_bounded(&mut reader, &mut line, self.max_record_bytes)
                .await
                .map_err(|source| RunError::Read {
                    path: name.to_string(),
                    source,
                })?;
            let Some(oversized) = read else { break };
            number += 1;
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() && !oversized {
                continue;
            }
            let origin = Origin {
                topic: Arc::clone(&topic),
                partition: 0,
                offset: number,
                kafka_ts_ms: None,
            };
            // An oversized line was not kept: hand the decoder an
            // over-limit marker so it is counted as too large.
            let over = vec![b' '; usize::from(oversized) * (self.max_record_bytes + 1)];
            let record = if oversized { over.as_slice() } else { trimmed };
            match builder.push(Some(record), origin) {
                Ok(rejected) => {
                    for r in rejected {
                        warn!(source = %name, line = number, element = r.index, reason = r.error.reason(), detail = %r.error, "Refused one record of a file that cannot be decoded; the others were read.");
                    }
                }
                Err(e) => {
                    warn!(source = %name, line = number, reason = e.reason(), detail = %e, "Refused a record that cannot be decoded.")
                }
            }
            if builder.is_full() {
                self.flush(builder, output).await?;
            }
        }
        Ok(())
    }

    async fn flush(
        &self,
        builder: &mut BatchBuilder,
        output: &mpsc::Sender<Delivery>,
    ) -> Result<(), RunError> {
        if builder.is_empty() {
            return Ok(());
        }
        let finished = builder.finish();
        self.metrics.add(&finished.tally);
        if !finished.batch.is_empty() {
            self.metrics
                .batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let delivery = Delivery {
                batch: finished.batch,
                secrets: finished.secrets,
                ack: Ack::none(),
            };
            // A closed receiver means downstream stopped: stop reading too.
            let _ = output.send(delivery).await;
        }
        Ok(())
    }
}

/// A file that counts the bytes read from it as stored, compressed or not
/// ([`IngestMetrics::input_bytes`]): progress against the file's size is
/// then honest for `.json.gz` too.
struct Counted<R> {
    inner: R,
    metrics: Arc<IngestMetrics>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let read = (buf.filled().len() - before) as u64;
            self.metrics.input_bytes.fetch_add(read, Relaxed);
        }
        poll
    }
}

/// `reader`, decompressed if it starts with gzip's magic bytes. Concatenated
/// gzip members (`cat a.gz b.gz`) are read one after another; lines stay
/// bounded by `max_record_bytes` however far a member inflates.
async fn decompressed<'a>(
    mut reader: impl AsyncBufRead + Unpin + Send + 'a,
) -> std::io::Result<Box<dyn AsyncBufRead + Unpin + Send + 'a>> {
    if reader.fill_buf().await?.starts_with(&[0x1f, 0x8b]) {
        let mut gzip = GzipDecoder::new(reader);
        gzip.multiple_members(true);
        Ok(Box::new(BufReader::with_capacity(1 << 16, gzip)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads one line into `buf` (without the newline), keeping at most `max`
/// bytes. Returns `None` at end of input, else whether the line was longer
/// than `max` (its excess is discarded, so memory stays bounded).
async fn read_line_bounded(
    reader: &mut (impl AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut oversized = false;
    let mut any = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(any.then_some(oversized));
        }
        any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if !oversized {
            if buf.len() + part.len() > max {
                oversized = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let consumed = done.unwrap_or(chunk.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(Some(oversized));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use schemas::DecodeError;

    use super::*;

    #[tokio::test]
    async fn bounded_lines() {
        let data: &[u8] = b"short\n\nxxxxxxxxxxxxxxxxxxxx\nlast";
        let mut r = BufReader::with_capacity(4, data);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 8).await.unwrap(),
            Some(false)
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 8).await.unwrap(),
            Some(false)
        );
        assert_eq!(buf, b"");
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 8).await.unwrap(),
            Some(true)
        );
        assert!(buf.is_empty());
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 8).await.unwrap(),
            Some(false)
        );
        assert_eq!(buf, b"last");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).await.unwrap(), None);
    }

    /// Writes `bytes` to a file called `name` and replays it with `config`:
    /// every event read, with its origin, and the source's metrics.
    async fn replay_file(
        name: &str,
        bytes: &[u8],
        config: &IngestConfig,
    ) -> (Vec<(schemas::Event, Origin)>, Arc<IngestMetrics>) {
        let dir = std::env::temp_dir().join(format!(
            "tokenwatch-file-source-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let metrics = Arc::new(IngestMetrics::default());
        let source = FileSource::new(&[path.display().to_string()], config, metrics.clone());
        let (tx, mut rx) = mpsc::channel(16);
        source.run(tx).await.unwrap();
        let mut seen = Vec::new();
        while let Some(d) = rx.recv().await {
            let events = d.batch.events.clone();
            seen.extend(events.into_iter().zip(d.batch.origins.iter().cloned()));
            d.ack.done();
        }
        std::fs::remove_dir_all(dir).unwrap();
        (seen, metrics)
    }

    fn line(i: usize) -> String {
        format!(r#"{{"ts":{i},"token_id":"t{i}","issuer":"i","action":"a","request_id":"r{i}"}}"#)
            + "\n"
    }

    #[tokio::test]
    async fn replays_a_file_into_batches_and_counts_rejects() {
        let mut text: String = (0..25).map(line).collect();
        text.push_str("not json\n\n");
        text.push_str(&format!("{{\"pad\":\"{}\"}}\n", "x".repeat(5000)));
        let mut config = IngestConfig::new(vec!["unused".into()]);
        config.batch_max_records = 10;
        config.max_record_bytes = 4096;
        let (seen, metrics) = replay_file("events.ndjson", text.as_bytes(), &config).await;

        let ids: Vec<_> = seen
            .iter()
            .map(|(e, _)| e.request_id.clone().unwrap())
            .collect();
        assert_eq!(ids, (0..25).map(|i| format!("r{i}")).collect::<Vec<_>>());
        assert!(seen.iter().all(|(_, o)| o.partition == 0 && o.offset >= 1));
        assert_eq!(metrics.batches.load(Relaxed), 3);
        assert_eq!(metrics.events.load(Relaxed), 25);
        assert_eq!(metrics.records.load(Relaxed), 27);
        assert_eq!(
            metrics.dead_lettered[DecodeError::InvalidJson.index()].load(Relaxed),
            1
        );
        assert_eq!(
            metrics.dead_lettered[DecodeError::TooLarge.index()].load(Relaxed),
            1
        );
    }

    async fn gzip(data: &[u8]) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        async_compression::tokio::bufread::GzipEncoder::new(data)
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn reads_gzip_input_member_after_member_with_bounded_lines() {
        let first: String = (0..3).map(line).collect();
        // A second member, as `cat a.gz b.gz` makes, with a line that
        // inflates far past the record limit.
        let second = format!("{}\n{}", "x".repeat(100_000), line(3));
        let mut compressed = gzip(first.as_bytes()).await;
        compressed.extend(gzip(second.as_bytes()).await);
        assert!(compressed.len() < 4096, "the long line compresses small");

        let mut config = IngestConfig::new(vec!["unused".into()]);
        config.max_record_bytes = 4096;
        let (seen, metrics) = replay_file("events.json.gz", &compressed, &config).await;
        let ids: Vec<_> = seen.iter().map(|(e, _)| e.token_id.as_str()).collect();
        assert_eq!(ids, ["t0", "t1", "t2", "t3"]);
        assert_eq!(
            metrics.dead_lettered[DecodeError::TooLarge.index()].load(Relaxed),
            1
        );
        // Progress counts the file as stored: every compressed byte, not
        // the 100 kB the long line inflates to.
        assert_eq!(metrics.input_bytes.load(Relaxed), compressed.len() as u64);
    }
}
