//! A client built with the AWS SDK for Rust and its default credentials chain, nothing else:
//! the integration tests run it with only the two variables `assume-roled env` prints, to show
//! that the Rust SDK accepts the daemon's answers. Prints the caller's ARN.

use aws_config::BehaviorVersion;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let identity = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await?;
    println!("{}", identity.arn().unwrap_or_default());
    Ok(())
}
