//! The frames between the server and a worker process, over the worker's stdin and stdout.
//!
//! A frame is a tag byte, a little-endian `u32` payload length and the payload. The server
//! sends `REQUEST` (a query request as JSON); the worker answers with any number of `DATA`
//! (result bytes, in order) and `ROWS` (a little-endian `u64`: rows written since the last one),
//! then exactly one `DONE` (JSON [`Done`]) or `FAILED` (JSON [`Failure`]), and waits for the next
//! request. A worker that reads the end of its stdin exits.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use spool_domain::{ProjectName, ResultColumn};
use spool_ports::EngineError;

/// A query request (server to worker).
pub const REQUEST: u8 = b'Q';
/// Result bytes.
pub const DATA: u8 = b'D';
/// Rows written.
pub const ROWS: u8 = b'R';
/// The query ended with a result.
pub const DONE: u8 = b'O';
/// The query ended without one.
pub const FAILED: u8 = b'E';

/// The largest payload a frame may carry: a request's SQL is far smaller, data frames are cut
/// well below it; anything larger is a broken stream.
const MAX_PAYLOAD: usize = 64 << 20;

/// How a query that produced a result ended.
#[derive(Debug, Serialize, Deserialize)]
pub struct Done {
    /// Rows written.
    pub rows: u64,
    /// The result's columns.
    pub columns: Vec<ResultColumn>,
}

/// How a query that produced no result ended: [`EngineError`] as it crosses the pipe.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum Failure {
    /// [`EngineError::ProjectNotFound`].
    ProjectNotFound(String),
    /// [`EngineError::InvalidQuery`].
    InvalidQuery(String),
    /// [`EngineError::Execution`].
    Execution(String),
    /// [`EngineError::Cancelled`].
    Cancelled,
    /// [`EngineError::Unavailable`].
    Unavailable(String),
    /// Anything else: [`EngineError::Internal`] with the message.
    Internal(String),
}

impl From<&EngineError> for Failure {
    fn from(error: &EngineError) -> Self {
        match error {
            EngineError::ProjectNotFound(name) => Self::ProjectNotFound(name.as_str().to_owned()),
            EngineError::InvalidQuery(m) => Self::InvalidQuery(m.clone()),
            EngineError::Execution(m) => Self::Execution(m.clone()),
            EngineError::Cancelled => Self::Cancelled,
            EngineError::Unavailable(m) => Self::Unavailable(m.clone()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<Failure> for EngineError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::ProjectNotFound(name) => match ProjectName::parse(&name) {
                Ok(name) => Self::ProjectNotFound(name),
                Err(_) => Self::InvalidQuery(format!("Project '{name}' does not exist;")),
            },
            Failure::InvalidQuery(m) => Self::InvalidQuery(m),
            Failure::Execution(m) => Self::Execution(m),
            Failure::Cancelled => Self::Cancelled,
            Failure::Unavailable(m) => Self::Unavailable(m),
            Failure::Internal(m) => Self::Internal(m),
        }
    }
}

/// Writes one frame.
pub fn write_frame(out: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_PAYLOAD)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&len.to_le_bytes());
    out.write_all(&head)?;
    out.write_all(payload)
}

/// Reads one frame's tag into the return value and its payload into `payload` (reusing its
/// allocation); `None` at the end of the stream before a frame starts.
pub fn read_frame(input: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Option<u8>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is larger than any the protocol sends"),
        ));
    }
    // Data frames are mostly of one size: resizing to the same length writes nothing, where
    // clearing first zeroed every frame's bytes before reading over them.
    payload.resize(len, 0);
    input.read_exact(payload)?;
    Ok(Some(head[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_cut_frame_is_an_error() {
        let mut wire = Vec::new();
        write_frame(&mut wire, DATA, b"a,b\n").expect("write");
        write_frame(&mut wire, ROWS, &7u64.to_le_bytes()).expect("write");
        let mut input = wire.as_slice();
        let mut payload = Vec::new();
        assert_eq!(
            read_frame(&mut input, &mut payload).expect("read"),
            Some(DATA)
        );
        assert_eq!(payload, b"a,b\n");
        assert_eq!(
            read_frame(&mut input, &mut payload).expect("read"),
            Some(ROWS)
        );
        assert_eq!(payload, 7u64.to_le_bytes());
        assert_eq!(read_frame(&mut input, &mut payload).expect("read"), None);
        let mut cut = &wire[..7];
        assert!(read_frame(&mut cut, &mut payload).is_err());
    }

    #[test]
    fn failures_cross_the_pipe_as_the_same_errors() {
        let project = ProjectName::parse("ssb").expect("name");
        for error in [
            EngineError::ProjectNotFound(project),
            EngineError::InvalidQuery("no such table".into()),
            EngineError::Execution("division by zero".into()),
            EngineError::Cancelled,
            EngineError::Unavailable("down".into()),
        ] {
            let json = serde_json::to_vec(&Failure::from(&error)).expect("json");
            let back: Failure = serde_json::from_slice(&json).expect("back");
            assert_eq!(EngineError::from(back).to_string(), error.to_string());
        }
    }
}
