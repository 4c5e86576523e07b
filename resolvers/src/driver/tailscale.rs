//! PLACEHOLDER: the `tailscale` driver (being written).

use async_trait::async_trait;
use omega_zgraph::ResolverMode;

use super::{Driver, DriverError, Exposure, Tunnel};

/// How the driver reaches its service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Where.
    pub socket: std::path::PathBuf,
}

/// The driver.
#[derive(Debug)]
pub struct TailscaleFunnel {
    config: Config,
}

impl TailscaleFunnel {
    /// A driver with `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

#[async_trait]
impl Driver for TailscaleFunnel {
    fn mode(&self) -> ResolverMode {
        ResolverMode::TailscaleFunnel
    }

    async fn expose(&self, _exposure: &Exposure) -> Result<Box<dyn Tunnel>, DriverError> {
        let _ = &self.config;
        Err(DriverError::Config {
            driver: "tailscale",
            detail: "not implemented yet".into(),
        })
    }
}
