//! PLACEHOLDER: the `cloudflared` driver (being written).

use async_trait::async_trait;
use omega_zgraph::ResolverMode;

use super::{Driver, DriverError, Exposure, Tunnel};

/// How the driver reaches its service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Where.
    pub program: std::path::PathBuf,
}

/// The driver.
#[derive(Debug)]
pub struct Cloudflared {
    config: Config,
}

impl Cloudflared {
    /// A driver with `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

#[async_trait]
impl Driver for Cloudflared {
    fn mode(&self) -> ResolverMode {
        ResolverMode::Cloudflared
    }

    async fn expose(&self, _exposure: &Exposure) -> Result<Box<dyn Tunnel>, DriverError> {
        let _ = &self.config;
        Err(DriverError::Config {
            driver: "cloudflared",
            detail: "not implemented yet".into(),
        })
    }
}
