//! `samlgate serve` as a process of its own: its config on fixed ports, started, stopped.

use std::io::Write;
use std::time::Duration;

use super::gateway::{self, Opts};

/// Writes `text` as `samlgate.toml` in `dir`; returns its path.
pub fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("samlgate.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path.display().to_string()
}

/// A valid config (see `gateway::toml`) on fixed ports, for a `serve` process; `public_url` is
/// what browsers are told (replicas behind one address share it).
pub fn config_on_ports(
    public_url: &str,
    port: u16,
    admin: u16,
    upstream: &str,
    opts: Opts<'_>,
) -> String {
    gateway::toml(public_url, upstream, opts)
        .replace(
            "admin_listen = \"127.0.0.1:0\"",
            &format!("admin_listen = \"127.0.0.1:{admin}\""),
        )
        .replace(
            "\nlisten = \"127.0.0.1:0\"",
            &format!("\nlisten = \"127.0.0.1:{port}\""),
        )
}

/// A `samlgate serve` process, killed if a failing test leaves it running.
pub struct Served(pub Option<std::process::Child>);

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `samlgate serve --config path` with `stderr` as given, once its admin port answers.
pub async fn serve(path: &str, admin: u16, stderr: std::process::Stdio) -> Served {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_samlgate"))
        .args(["serve", "--config", path])
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Served(Some(child))
}

/// Sends SIGTERM to the process and waits (at most 10 s) for it to exit.
pub async fn terminate(mut served: Served) -> std::process::ExitStatus {
    let child = served.0.as_mut().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..200 {
        if let Some(exit) = child.try_wait().unwrap() {
            served.0 = None;
            return exit;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("samlgate did not exit within 10 s of SIGTERM");
}
