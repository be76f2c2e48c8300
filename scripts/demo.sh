#!/usr/bin/env bash
# Re-enacts the cross-account scenario offline, in one command (`make demo`):
# moto stands in for AWS with two accounts, assume-roled runs as the host role hoge-ec2-role in
# 111122223333 and serves piyo-role in 444455556666, and the real aws CLI, set up by nothing but
# `eval "$(assume-roled env)"`, works in the other account. Everything started is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=$PWD
VENV=.venv
BIN=${BIN:-target/debug/assume-roled}
# The work directory and its cleanup, free_port, wait_until, and moto with the two accounts.
source tests/support/stand_ins.sh
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting moto, the AWS stand-in, and creating hoge-ec2-role in 111122223333 and piyo-role (ec2:Describe* only) in 444455556666"
start_moto
echo "moto on 127.0.0.1:$moto_port; the host's own identity: a session of hoge-ec2-role, as an instance profile provides"

listen_port=$(free_port)
cat >"$work/config.toml" <<CONFIG
[server]
listen = "127.0.0.1:$listen_port"
token_file = "$work/state/token"

[sts]
region = "us-east-1"
endpoint = "http://127.0.0.1:$moto_port"

[[roles]]
name = "piyo"
arn = "arn:aws:iam::444455556666:role/piyo-role"
session_name = "hoge"
CONFIG
step "starting assume-roled with this configuration"
cat "$work/config.toml"
env -i PATH="$PATH" "${host_env[@]}" "$BIN" serve --config "$work/config.toml" 2>"$work/daemon.log" &
pids+=($!)
wait_until curl -sf "http://127.0.0.1:$listen_port/readyz" || { cat "$work/daemon.log"; echo "the daemon never became ready" >&2; exit 1; }

step 'the whole user set-up: eval "$(assume-roled env)"'
"$BIN" env --config "$work/config.toml"
eval "$("$BIN" env --config "$work/config.toml")"
# Keep the demo away from this machine's own AWS configuration, and send AWS calls to moto.
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
export AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN

step "aws sts get-caller-identity   (expect piyo-role in 444455556666)"
"$VENV/bin/aws" sts get-caller-identity

step "aws ec2 describe-vpcs   (account 444455556666's VPC, visible to piyo-role)"
"$VENV/bin/aws" ec2 describe-vpcs --filters Name=tag:Name,Values=piyo-vpc \
  --query 'Vpcs[].{VpcId: VpcId, Cidr: CidrBlock, Owner: OwnerId}' --output table

step "aws ec2 describe-instances   (read access works)"
"$VENV/bin/aws" ec2 describe-instances --output json

step "aws ec2 run-instances   (a write: piyo-role may only read, so this is denied)"
if "$VENV/bin/aws" ec2 run-instances --image-id ami-12345678 --instance-type t2.micro 2>&1; then
  echo "unexpected: the write succeeded" >&2
  exit 1
fi

step "a request without the token"
curl -s "http://127.0.0.1:$listen_port/roles/piyo"; echo

step "what assume-roled logged (no secrets in it)"
cat "$work/daemon.log"
step "done: stopping assume-roled and moto"
