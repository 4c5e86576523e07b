//! The image-chunk protocol: requests a member serves and responses a
//! fetching node takes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use omega_gossip::node::{ImageRequest, ImageResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ImageRequest::from_bytes(data) {
        assert!(ImageRequest::from_bytes(&req.to_bytes()).is_ok());
    }
    if let Ok(resp) = ImageResponse::from_bytes(data) {
        assert!(ImageResponse::from_bytes(&resp.to_bytes()).is_ok());
    }
});
