//! The AWS SDK as hopwatch loads it, for every client it makes (CloudWatch, discovery, Cloud
//! Map probes): HTTPS through rustls with ring (the TLS stack the probes use; no aws-lc, no
//! native TLS), credentials from the SDK's default chain, and the region and one endpoint for
//! every service when the config names them.
//!
//! Services whose SDK crate costs more to build than hopwatch uses of it (EC2, CloudWatch Logs)
//! are spoken directly on the same runtime: [`call`].

pub mod call;

/// The SDK config loader: `region` and `endpoint_url` override the default chains when given.
/// Each caller adds its own retry and timeout policy, then loads.
pub fn loader(region: Option<&str>, endpoint_url: Option<&str>) -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader
}
