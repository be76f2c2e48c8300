//! nf_tables' change notifications: the kernel tells every member of the `NFNLGRP_NFTABLES`
//! netlink group about each committed change to any table, and `nft monitor` (the reference
//! implementation, as everywhere in the guard) prints each one as a line as it arrives. The
//! watch reacts to those lines instead of polling, so a flush is answered in milliseconds.
//!
//! The lines are not parsed: any change is a reason to look at the table again, and the look
//! itself (`nft list table`) decides. The crate has no `unsafe` code, which joining a netlink
//! group directly would need.

use std::io::{self, BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use tokio::sync::mpsc;

/// A running `nft monitor`, killed when dropped.
pub struct Changes {
    monitor: Child,
    /// One message stands for any number of lines not yet looked at; closed when the monitor
    /// ends.
    seen: mpsc::Receiver<()>,
}

impl Changes {
    /// Starts `nft monitor` (needs `CAP_NET_ADMIN`, as changing the table does). It joins the
    /// notification group a moment after it starts: the caller looks at the table after that.
    pub fn subscribe() -> io::Result<Self> {
        let mut monitor = Command::new("nft")
            .arg("monitor")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = monitor.stdout.take().expect("stdout is piped");
        let (sender, seen) = mpsc::channel(1);
        // A thread of its own: reading a pipe blocks, and the lines come rarely.
        std::thread::Builder::new()
            .name("nft-monitor".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    if line.is_err() || sender.is_closed() {
                        return;
                    }
                    // Full: a look is pending already, and will see this change too.
                    let _ = sender.try_send(());
                }
            })?;
        Ok(Self { monitor, seen })
    }

    /// Waits for the next change; an error when the monitor ended.
    pub async fn next(&mut self) -> io::Result<()> {
        match self.seen.recv().await {
            Some(()) => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "nft monitor ended",
            )),
        }
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
    }
}
