//! A request body kept so that it can be sent twice (the retry after a 40001), without
//! memory growing with its size: small bodies stay in memory, bigger ones go to an
//! unnamed temporary file (gone when closed, even after a crash).

use std::io::{Seek, SeekFrom};

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

/// Bodies up to this size stay in memory.
pub const IN_MEMORY: usize = 256 * 1024;

/// Why a body could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("request body over gateway.max_body ({0} bytes)")]
    TooLarge(usize),
    #[error("reading the request body failed: {0}")]
    Read(String),
    #[error("cannot spool the request body to a temporary file: {0}")]
    Io(#[from] std::io::Error),
}

/// A kept request body.
pub enum Spooled {
    Memory(Bytes),
    File { file: std::fs::File, len: u64 },
}

impl Spooled {
    /// Reads `body` to its end, refusing more than `max` bytes.
    pub async fn read(mut body: Body, max: usize) -> Result<Self, SpoolError> {
        let mut memory: Vec<u8> = Vec::new();
        let mut file: Option<tokio::fs::File> = None;
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                // The server's limit on chunked bodies ends the stream with an error.
                if std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    || e.to_string().contains("length limit")
                {
                    SpoolError::TooLarge(max)
                } else {
                    SpoolError::Read(e.to_string())
                }
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            len += data.len();
            if len > max {
                return Err(SpoolError::TooLarge(max));
            }
            match &mut file {
                Some(file) => file.write_all(&data).await?,
                None if len <= IN_MEMORY => memory.extend_from_slice(&data),
                None => {
                    let mut spill = tokio::fs::File::from_std(tempfile::tempfile()?);
                    spill.write_all(&memory).await?;
                    spill.write_all(&data).await?;
                    memory = Vec::new();
                    file = Some(spill);
                }
            }
        }
        Ok(match file {
            None => Spooled::Memory(Bytes::from(memory)),
            Some(mut file) => {
                file.flush().await?;
                Spooled::File {
                    file: file.into_std().await,
                    len: len as u64,
                }
            }
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Spooled::Memory(bytes) => bytes.len() as u64,
            Spooled::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A body that sends it from its start (streamed from the file when spooled).
    pub fn body(&self) -> Result<reqwest::Body, std::io::Error> {
        match self {
            Spooled::Memory(bytes) => Ok(reqwest::Body::from(bytes.clone())),
            Spooled::File { file, .. } => {
                // Clones share the offset; sends are one after the other.
                let mut file = file.try_clone()?;
                file.seek(SeekFrom::Start(0))?;
                let reader = tokio_util::io::ReaderStream::with_capacity(
                    tokio::fs::File::from_std(file),
                    64 * 1024,
                );
                Ok(reqwest::Body::wrap_stream(reader))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bytes_of(spooled: &Spooled) -> Vec<u8> {
        let body = spooled.body().unwrap();
        let mut out = Vec::new();
        let mut stream = http_body_util::BodyDataStream::new(body);
        use futures_util::StreamExt;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory_big_ones_go_to_a_file_and_replay() {
        let small = Spooled::read(Body::from("hello"), 1 << 20).await.unwrap();
        assert!(matches!(small, Spooled::Memory(_)));
        assert_eq!(bytes_of(&small).await, b"hello");

        let data: Vec<u8> = (0..IN_MEMORY * 3).map(|i| (i % 251) as u8).collect();
        let big = Spooled::read(Body::from(data.clone()), 1 << 22)
            .await
            .unwrap();
        assert!(matches!(big, Spooled::File { .. }));
        assert_eq!(big.len(), data.len() as u64);
        assert_eq!(bytes_of(&big).await, data, "first send");
        assert_eq!(bytes_of(&big).await, data, "the retry sends it all again");

        let refused = Spooled::read(Body::from(data), 1000).await;
        assert!(matches!(refused, Err(SpoolError::TooLarge(1000))));
    }
}
