//! PLACEHOLDER: the `netbird` driver (being written).

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
pub struct Netbird {
    config: Config,
}

impl Netbird {
    /// A driver with `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

#[async_trait]
impl Driver for Netbird {
    fn mode(&self) -> ResolverMode {
        ResolverMode::Netbird
    }

    async fn expose(&self, _exposure: &Exposure) -> Result<Box<dyn Tunnel>, DriverError> {
        let _ = &self.config;
        Err(DriverError::Config {
            driver: "netbird",
            detail: "not implemented yet".into(),
        })
    }
}
