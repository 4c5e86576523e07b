//! PLACEHOLDER: the `ngrok` driver (being written).

use async_trait::async_trait;
use omega_zgraph::ResolverMode;

use super::{Driver, DriverError, Exposure, Tunnel};

/// How the driver reaches its service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Where.
    pub api: String,
}

/// The driver.
#[derive(Debug)]
pub struct Ngrok {
    config: Config,
}

impl Ngrok {
    /// A driver with `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

#[async_trait]
impl Driver for Ngrok {
    fn mode(&self) -> ResolverMode {
        ResolverMode::Ngrok
    }

    async fn expose(&self, _exposure: &Exposure) -> Result<Box<dyn Tunnel>, DriverError> {
        let _ = &self.config;
        Err(DriverError::Config {
            driver: "ngrok",
            detail: "not implemented yet".into(),
        })
    }
}
