//! The local admin socket: a Unix socket in `data_dir` (mode 0600, never on the network)
//! carrying one JSON command per line and one JSON answer per line.

use super::{AdminError, Command, execute};
use crate::app::App;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

const MAX_LINE: u64 = 1024 * 1024;

/// Binds the socket, replacing a stale one left by a killed server.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use: is another server running?", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers commands until the process ends.
pub async fn serve(app: Arc<App>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read.take(MAX_LINE));
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let answer: Result<Value, AdminError> = match serde_json::from_str::<Command>(&line) {
                Ok(cmd) => execute(&app, cmd).await,
                Err(e) => Err(AdminError::Invalid(format!("malformed command: {e}"))),
            };
            let mut out = serde_json::to_vec(&answer).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

/// Sends a command to a running server. `Err` means no server answered on the socket.
pub async fn send(path: &Path, command: &Command) -> std::io::Result<Result<Value, AdminError>> {
    let stream = UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(command)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(read.take(64 * MAX_LINE))
        .read_line(&mut answer)
        .await?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}
