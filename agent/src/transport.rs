//! Guest-side transports: a virtio-serial port and vsock listeners, each
//! adapted to the byte-chunk interface of [`crate::session`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use banger_agent::session::{self, Input};

/// Serves forever on whatever transports the guest has.
pub(crate) async fn serve(port_name: &str, vsock_port: u32) {
    let mut serial_started = false;
    let mut vsock_started = false;
    loop {
        if !serial_started
            && let Some(dev) = find_serial_port(Path::new("/sys/class/virtio-ports"), port_name)
        {
            match OpenOptions::new().read(true).write(true).open(&dev) {
                Ok(file) => {
                    eprintln!("banger-agent: serving on {}", dev.display());
                    serve_serial(file);
                    serial_started = true;
                }
                Err(e) => eprintln!("banger-agent: cannot open {}: {e}", dev.display()),
            }
        }
        if !vsock_started && Path::new("/dev/vsock").exists() {
            match tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(
                tokio_vsock::VMADDR_CID_ANY,
                vsock_port,
            )) {
                Ok(listener) => {
                    eprintln!("banger-agent: listening on vsock port {vsock_port}");
                    tokio::spawn(serve_vsock(listener));
                    vsock_started = true;
                }
                Err(e) => eprintln!("banger-agent: vsock bind failed: {e}"),
            }
        }
        // Both transports may appear late (modules, devices); keep looking
        // for the missing one without ever exiting.
        let wait = if serial_started || vsock_started {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(100)
        };
        tokio::time::sleep(wait).await;
    }
}

/// Finds `/dev/vportNpM` for the port called `name` (no udev in the guest,
/// so there is no `/dev/virtio-ports/NAME` link).
fn find_serial_port(class_dir: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(class_dir).ok()?;
    for entry in entries.flatten() {
        let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            return Some(Path::new("/dev").join(entry.file_name()));
        }
    }
    None
}

/// A virtio-serial port may be opened only once, so one fd is shared by a
/// blocking reader thread and a blocking writer thread. Reads return 0 while
/// no host is connected: that is "disconnected", not the end.
fn serve_serial(file: File) {
    let (in_tx, in_rx) = mpsc::channel::<Input>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    let mut writer = match file.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("banger-agent: cannot duplicate port fd: {e}");
            return;
        }
    };
    let mut reader = file;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut connected = false;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => {
                    if connected {
                        connected = false;
                        if in_tx.blocking_send(Input::Disconnected).is_err() {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(n) => {
                    connected = true;
                    if in_tx
                        .blocking_send(Input::Bytes(buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("banger-agent: port read failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
    std::thread::spawn(move || {
        while let Some(bytes) = out_rx.blocking_recv() {
            // A write can fail while no host is attached; the frame is
            // lost, which is what a disconnected host would see anyway.
            if let Err(e) = writer.write_all(&bytes) {
                eprintln!("banger-agent: port write failed: {e}");
            }
        }
    });
    tokio::spawn(session::run(in_rx, out_tx));
}

async fn serve_vsock(listener: tokio_vsock::VsockListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _addr)) => {
                let (rd, wr) = stream.into_split();
                serve_connection(rd, wr);
            }
            Err(e) => {
                eprintln!("banger-agent: vsock accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One host connection: its own session, ended when the host goes away.
fn serve_connection<R, W>(mut rd: R, mut wr: W)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (in_tx, in_rx) = mpsc::channel::<Input>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = in_tx.send(Input::Disconnected).await;
                    return;
                }
                Ok(n) => {
                    if in_tx.send(Input::Bytes(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(session::run(in_rx, out_tx));
}

/// The host-process test double of a VM (debug builds only): serves
/// sessions on a unix socket, as a VMM's agent endpoint would carry them.
/// Connections made before `ready_after` has passed wait unanswered, as a
/// hello sent to a VMM's socket waits while its guest boots. Power-off
/// ends this process (see [`session::power_off_ends_this_process`]).
#[cfg(debug_assertions)]
pub(crate) async fn serve_unix(path: &Path, ready_after: Duration) -> std::io::Result<()> {
    session::power_off_ends_this_process();
    let ready_at = tokio::time::Instant::now() + ready_after;
    let listener = tokio::net::UnixListener::bind(path)?;
    eprintln!(
        "banger-agent: listening on {} (ready in {} ms)",
        path.display(),
        ready_after.as_millis()
    );
    loop {
        let (stream, _addr) = listener.accept().await?;
        tokio::spawn(async move {
            tokio::time::sleep_until(ready_at).await;
            let (rd, wr) = stream.into_split();
            serve_connection(rd, wr);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_port_by_name() {
        let dir = tempdir();
        for (dev, name) in [("vport1p1", "other"), ("vport2p1", "banger.agent")] {
            std::fs::create_dir_all(dir.join(dev)).unwrap();
            std::fs::write(dir.join(dev).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_serial_port(&dir, "banger.agent"),
            Some(PathBuf::from("/dev/vport2p1"))
        );
        assert_eq!(find_serial_port(&dir, "missing"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("banger-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
