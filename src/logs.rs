//! Log lines leave the request path: each is handed to a writer thread through a bounded queue,
//! so a slow journal (or a full pipe) never holds a request, and a flood of lines cannot grow
//! memory. A line that finds the queue full is dropped and counted, never silently: the writer
//! says how many it lost in a line of its own as soon as it can, and [`Dropped::total`] counts
//! them all.

pub mod filter;
pub mod journal;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Duration;

use tokio::sync::mpsc::{self, Receiver, Sender, error::TrySendError};

/// Lines waiting to be written at most: a burst of this many never blocks or drops; more than
/// the audit's two tables can summarise at once (2 × 4,096 lines).
pub const QUEUE_LINES: usize = 16_384;

/// How many lines were dropped because the queue was full.
#[derive(Clone, Default)]
pub struct Dropped {
    /// Not yet reported in the log.
    unreported: Arc<AtomicU64>,
    /// Since start.
    total: Arc<AtomicU64>,
}

impl Dropped {
    /// The lines dropped since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn add(&self) {
        self.unreported.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the writer thread is sent.
enum Message {
    Line(Vec<u8>),
    /// Answer once everything sent before is written.
    Flush(SyncSender<()>),
}

/// Where the formatter writes: a line goes into the queue, or is counted as dropped. The queue
/// is tokio's bounded channel, which takes memory in blocks of a few lines as they come: the
/// standard library's sets its whole capacity up front (half a megabyte for 16,384 lines, all of
/// it resident for a queue that is nearly always empty).
#[derive(Clone)]
pub struct QueueWriter {
    lines: Sender<Message>,
    dropped: Dropped,
}

impl QueueWriter {
    /// Waits (at most `limit`) until every line queued so far is written: before the process
    /// exits, so that its last lines are not lost.
    pub fn flush_within(&self, limit: Duration) {
        const PAUSE: Duration = Duration::from_millis(1);
        let (done, written) = sync_channel(1);
        let mut message = Message::Flush(done);
        // A full queue takes the flush once the writer has made room; outside any runtime, so
        // the wait is counted in pauses rather than read off a clock.
        let mut pauses = limit.as_millis();
        loop {
            match self.lines.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if pauses > 0 => {
                    message = back;
                    pauses -= 1;
                    std::thread::sleep(PAUSE);
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(limit);
    }
}

impl Write for QueueWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self.lines.try_send(Message::Line(bytes.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.add(),
            // The writer thread is gone (the process is ending): nothing to keep the line for.
            Err(TrySendError::Closed(_)) => {}
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A queue of `capacity` lines in front of `out`, written by a thread of its own; the writer
/// to give the formatter, and the count of dropped lines. A queue holds one line at least.
pub fn queued(capacity: usize, out: impl Write + Send + 'static) -> (QueueWriter, Dropped) {
    let (lines, queue) = mpsc::channel(capacity.max(1));
    let dropped = Dropped::default();
    let writer = QueueWriter {
        lines,
        dropped: dropped.clone(),
    };
    let reporter = dropped.clone();
    std::thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn(move || write_lines(queue, out, &reporter))
        .expect("a thread for the log writer");
    (writer, dropped)
}

/// Writes queued lines until every sender is gone, saying how many were dropped whenever the
/// queue has run dry after losing some.
fn write_lines(mut queue: Receiver<Message>, mut out: impl Write, dropped: &Dropped) {
    let write = |message: Message, out: &mut dyn Write| match message {
        Message::Line(line) => {
            let _ = out.write_all(&line);
        }
        Message::Flush(done) => {
            let _ = out.flush();
            let _ = done.try_send(());
        }
    };
    // A thread of its own, outside the runtime: waiting here blocks nothing else.
    while let Some(first) = queue.blocking_recv() {
        write(first, &mut out);
        while let Ok(next) = queue.try_recv() {
            write(next, &mut out);
        }
        let lost = dropped.unreported.swap(0, Ordering::Relaxed);
        if lost > 0 {
            // One write: a journal sink takes each write as one record.
            let report =
                format!("WARN assume-roled: {lost} log lines dropped: the log could not keep up\n");
            let _ = out.write_all(report.as_bytes());
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink that holds what it gets, and can be made to stall.
    #[derive(Clone, Default)]
    struct Sink {
        written: Arc<Mutex<Vec<u8>>>,
        stalled: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _stall = self.stalled.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(sink: &Sink) -> String {
        String::from_utf8(sink.written.lock().unwrap().clone()).unwrap()
    }

    /// Lines are written in order; when the sink stalls, writers never wait: lines past the
    /// queue are dropped, counted, and the count is written once the sink moves again.
    #[test]
    fn a_stalled_sink_drops_counts_and_reports() {
        let sink = Sink::default();
        let (mut writer, dropped) = queued(4, sink.clone());
        writer.write_all(b"one\n").unwrap();
        let wait = || std::thread::sleep(Duration::from_millis(50));
        wait();
        assert_eq!(text(&sink), "one\n");

        let stall = sink.stalled.lock().unwrap();
        // A writer that waited would hang here for good: the sink stays stalled until after.
        for n in 0..100 {
            writer.write_all(format!("line {n}\n").as_bytes()).unwrap();
        }
        drop(stall);
        wait();
        let written = text(&sink);
        let kept = written.lines().filter(|l| l.starts_with("line ")).count();
        // The queue's 4, and the one the writer thread held when the sink stalled.
        assert!((4..=5).contains(&kept), "{written}");
        let reported = format!("{} log lines dropped", 100 - kept);
        assert!(written.contains(&reported), "{written}");
        assert_eq!(dropped.total(), 100 - kept as u64);
    }

    /// What was queued before a flush is written when it returns.
    #[test]
    fn flush_waits_for_the_queue() {
        let sink = Sink::default();
        let (mut writer, _) = queued(64, sink.clone());
        for n in 0..50 {
            writer.write_all(format!("line {n}\n").as_bytes()).unwrap();
        }
        writer.flush_within(Duration::from_secs(5));
        assert_eq!(text(&sink).lines().count(), 50);
    }
}
