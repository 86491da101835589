//! Call metadata shared by every gRPC and Flight call: the protocol version and the run's
//! shared token. [`Guard`] checks both on the server side; [`Stamp`] adds both on the client
//! side. The token is never logged: errors say only that it was missing or wrong.

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// Metadata key of the protocol version.
pub const VERSION_KEY: &str = "x-airlift-protocol";
/// Metadata key of the token (`Bearer <token>`).
pub const TOKEN_KEY: &str = "authorization";

/// Server-side check of version and token; usable as a tonic interceptor.
#[derive(Clone)]
pub struct Guard {
    token: Option<String>,
}

impl Guard {
    /// Accepts calls carrying this token (`None`: any token, for loopback runs without one).
    pub fn new(token: Option<String>) -> Self {
        Guard { token }
    }

    /// Checks the metadata of a call.
    pub fn check(&self, meta: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let version = meta.get(VERSION_KEY).and_then(|v| v.to_str().ok());
        match version.and_then(|v| v.parse::<u32>().ok()) {
            Some(v) if v == crate::PROTOCOL_VERSION => {}
            Some(v) => {
                return Err(Status::failed_precondition(format!(
                    "protocol version mismatch: this peer speaks airlift protocol {}, the caller sent {v}; run the same airlift build on every machine",
                    crate::PROTOCOL_VERSION
                )))
            }
            None => {
                return Err(Status::failed_precondition(format!(
                    "missing or unreadable `{VERSION_KEY}` metadata (expected protocol version {})",
                    crate::PROTOCOL_VERSION
                )))
            }
        }
        if let Some(want) = &self.token {
            let got = meta.get(TOKEN_KEY).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            match got {
                Some(t) if constant_time_eq(t.as_bytes(), want.as_bytes()) => {}
                Some(_) => return Err(Status::unauthenticated("wrong run token (check the token file or AIRLIFT_TOKEN)")),
                None => return Err(Status::unauthenticated("missing run token: this run requires `authorization: Bearer <token>`")),
            }
        }
        Ok(())
    }
}

impl tonic::service::Interceptor for Guard {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(req.metadata())?;
        Ok(req)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Client-side stamp of version and token; usable as a tonic interceptor.
#[derive(Clone)]
pub struct Stamp {
    version: u32,
    token: Option<String>,
}

impl Stamp {
    /// Stamps calls with this build's protocol version and `token`.
    pub fn new(token: Option<String>) -> Self {
        Stamp {
            version: crate::PROTOCOL_VERSION,
            token,
        }
    }

    /// Stamps calls with another protocol version (tests of the refusal).
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Adds the metadata to `meta`.
    pub fn apply(&self, meta: &mut tonic::metadata::MetadataMap) {
        meta.insert(VERSION_KEY, MetadataValue::from(self.version));
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                meta.insert(TOKEN_KEY, v);
            }
        }
    }
}

impl tonic::service::Interceptor for Stamp {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        self.apply(req.metadata_mut());
        Ok(req)
    }
}

/// Reads the run token: the file if given (trimmed), else env `AIRLIFT_TOKEN`, else none.
pub fn load_token(file: Option<&std::path::Path>) -> Result<Option<String>, String> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            return Err(format!("{}: the token file is empty", f.display()));
        }
        return Ok(Some(t));
    }
    Ok(std::env::var("AIRLIFT_TOKEN").ok().filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_refuses_wrong_version_and_token() {
        let guard = Guard::new(Some("s3cret".into()));
        let mut meta = tonic::metadata::MetadataMap::new();
        Stamp::new(Some("s3cret".into())).apply(&mut meta);
        assert!(guard.check(&meta).is_ok());
        let mut meta = tonic::metadata::MetadataMap::new();
        Stamp::new(Some("nope".into())).apply(&mut meta);
        let e = guard.check(&meta).unwrap_err();
        assert!(e.message().contains("wrong run token") && !e.message().contains("s3cret"));
        let mut meta = tonic::metadata::MetadataMap::new();
        Stamp::new(Some("s3cret".into())).with_version(99).apply(&mut meta);
        assert!(guard.check(&meta).unwrap_err().message().contains("protocol version mismatch"));
    }
}
