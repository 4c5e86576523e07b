//! Branes calling branes by manifest name.
//!
//! A brane's outgoing `wasi:http` request whose host ends in `.brane` is not
//! sent to the network: `http://NAME.brane/…` names brane `NAME` of the
//! caller's own manifest, `http://NAME.MANIFEST.brane/…` brane `NAME` of
//! manifest `MANIFEST` (scheme `http`, any port ignored, case folded). The
//! runtime checks the caller's `grants.call` — `"NAME"` grants `NAME` of the
//! caller's manifest, `"MANIFEST/NAME"` the other one — and hands a granted
//! request to the host's [`BraneCalls`], which routes it to a replica
//! wherever it runs. A call that is not granted, or made where no host
//! routes calls (`omega run`), fails with `HTTP-request-denied` and a log
//! line on the caller saying which grant is missing.

use std::future::Future;
use std::pin::Pin;

use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// The host-name suffix of brane addresses.
pub const BRANE_SUFFIX: &str = ".brane";

/// The brane a `.brane` address names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallTarget {
    /// The manifest, when the address names one (`NAME.MANIFEST.brane`).
    pub manifest: Option<String>,
    /// The brane.
    pub brane: String,
}

impl CallTarget {
    /// Parses a request host: `None` when it is not a brane address,
    /// `Some(Err(reason))` when it is a malformed one.
    pub fn parse(host: &str) -> Option<Result<Self, String>> {
        let lower = host.to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        let rest = lower.strip_suffix(BRANE_SUFFIX)?;
        let labels: Vec<&str> = rest.split('.').collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        Some(match labels.as_slice() {
            [brane] if valid(brane) => Ok(Self {
                manifest: None,
                brane: (*brane).to_owned(),
            }),
            [brane, manifest] if valid(brane) && valid(manifest) => Ok(Self {
                manifest: Some((*manifest).to_owned()),
                brane: (*brane).to_owned(),
            }),
            _ => Err(format!(
                "`{host}` is not a brane address: write `NAME.brane` or `NAME.MANIFEST.brane`"
            )),
        })
    }

    /// Whether `calls` (a caller's `grants.call`) grants this target to a
    /// brane of manifest `own`.
    pub fn granted(&self, own: &str, calls: &[String]) -> bool {
        match &self.manifest {
            None => calls.contains(&self.brane),
            Some(m) if m == own => calls
                .iter()
                .any(|c| *c == self.brane || *c == format!("{m}/{}", self.brane)),
            Some(m) => calls.iter().any(|c| *c == format!("{m}/{}", self.brane)),
        }
    }

    /// The grant that would allow it, as the caller writes it.
    pub fn grant(&self, own: &str) -> String {
        match &self.manifest {
            Some(m) if m != own => format!("{m}/{}", self.brane),
            _ => self.brane.clone(),
        }
    }
}

impl std::fmt::Display for CallTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.manifest {
            Some(m) => write!(f, "{m}/{}", self.brane),
            None => f.write_str(&self.brane),
        }
    }
}

/// What a call answers: the response, or a `wasi:http` error code.
pub type CallFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<WasiBody>, HttpError>> + Send>>;

/// The host's router for granted brane calls (the node routes them through
/// the mesh).
pub trait BraneCalls: Send + Sync {
    /// Sends `request` from brane `caller` of manifest `manifest` to
    /// `target` (its `manifest` filled in). Already granted.
    fn call(
        &self,
        manifest: &str,
        caller: &str,
        target: CallTarget,
        request: http::Request<WasiBody>,
    ) -> CallFuture;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(m: Option<&str>, b: &str) -> CallTarget {
        CallTarget {
            manifest: m.map(str::to_owned),
            brane: b.into(),
        }
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(CallTarget::parse("api.brane"), Some(Ok(t(None, "api"))));
        assert_eq!(CallTarget::parse("API.Brane."), Some(Ok(t(None, "api"))));
        assert_eq!(
            CallTarget::parse("api.shop.brane"),
            Some(Ok(t(Some("shop"), "api")))
        );
        assert_eq!(CallTarget::parse("example.com"), None);
        assert!(matches!(CallTarget::parse(".brane"), Some(Err(_))));
        assert!(matches!(CallTarget::parse("a.b.c.brane"), Some(Err(_))));
        assert!(matches!(CallTarget::parse("9a.brane"), Some(Err(_))));
    }

    #[test]
    fn grants_name_this_manifest_or_another() {
        let calls = vec!["api".to_owned(), "billing/invoices".to_owned()];
        assert!(t(None, "api").granted("shop", &calls));
        assert!(t(Some("shop"), "api").granted("shop", &calls));
        assert!(!t(Some("other"), "api").granted("shop", &calls));
        assert!(t(Some("billing"), "invoices").granted("shop", &calls));
        assert!(!t(None, "invoices").granted("shop", &calls));
        assert_eq!(t(Some("billing"), "x").grant("shop"), "billing/x");
        assert_eq!(t(Some("shop"), "x").grant("shop"), "x");
    }
}
