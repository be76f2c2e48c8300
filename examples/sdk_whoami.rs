//! A client built with the AWS SDK for Rust and its default chains, nothing else: the
//! integration tests run it with only the variables `assume-roled env` prints (or, for the
//! metadata endpoint, `AWS_EC2_METADATA_SERVICE_ENDPOINT`), to show that the Rust SDK accepts
//! the daemon's answers. Prints the caller's ARN, then the region the SDK resolved.

use aws_config::BehaviorVersion;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let identity = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await?;
    println!("{}", identity.arn().unwrap_or_default());
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    println!("{region}");
    Ok(())
}
