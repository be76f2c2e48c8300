"""Creates the two-account scenario in a fresh moto server, then turns IAM checks on.

Account 111122223333 (the host's): user `bootstrap`, allowed to assume `hoge-ec2-role`, which
stands in for the EC2 instance profile and may assume piyo-role. Account 444455556666: role
`piyo-role`, trusting 111122223333, allowed only ec2:Describe*, and a VPC tagged `piyo-vpc` that
only that account can see. Prints, as JSON, a session of hoge-ec2-role: the credentials an
instance profile would hand the daemon.

Usage: python bootstrap.py http://127.0.0.1:PORT
"""

import json
import sys
import urllib.request

import boto3

HOST_ACCOUNT = "111122223333"
TARGET_ACCOUNT = "444455556666"
REGION = "us-east-1"
PIYO_ARN = f"arn:aws:iam::{TARGET_ACCOUNT}:role/piyo-role"
HOGE_ARN = f"arn:aws:iam::{HOST_ACCOUNT}:role/hoge-ec2-role"


def client(endpoint, service, account=None, **credentials):
    credentials.setdefault("aws_access_key_id", "bootstrap")
    credentials.setdefault("aws_secret_access_key", "bootstrap")
    made = boto3.client(service, endpoint_url=endpoint, region_name=REGION, **credentials)
    if account:
        def pin_account(request, **_):
            request.headers["x-moto-account-id"] = account
        made.meta.events.register("before-sign.*.*", pin_account)
    return made


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action, resource="*"):
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def trust(principal):
    return policy({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"})


def main(endpoint):
    iam_a = client(endpoint, "iam", HOST_ACCOUNT)
    iam_a.create_user(UserName="bootstrap")
    iam_a.put_user_policy(
        UserName="bootstrap", PolicyName="assume-hoge", PolicyDocument=policy(allow("sts:AssumeRole", HOGE_ARN))
    )
    key = iam_a.create_access_key(UserName="bootstrap")["AccessKey"]
    iam_a.create_role(
        RoleName="hoge-ec2-role",
        AssumeRolePolicyDocument=trust({"AWS": f"arn:aws:iam::{HOST_ACCOUNT}:user/bootstrap"}),
    )
    iam_a.put_role_policy(
        RoleName="hoge-ec2-role", PolicyName="assume-piyo", PolicyDocument=policy(allow("sts:AssumeRole", PIYO_ARN))
    )

    iam_b = client(endpoint, "iam", TARGET_ACCOUNT)
    iam_b.create_role(RoleName="piyo-role", AssumeRolePolicyDocument=trust({"AWS": f"arn:aws:iam::{HOST_ACCOUNT}:root"}))
    iam_b.put_role_policy(RoleName="piyo-role", PolicyName="view-only", PolicyDocument=policy(allow("ec2:Describe*")))
    ec2_b = client(endpoint, "ec2", TARGET_ACCOUNT)
    vpc = ec2_b.create_vpc(CidrBlock="10.44.0.0/16")["Vpc"]["VpcId"]
    ec2_b.create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": "piyo-vpc"}])

    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}, method="POST"
    )
    urllib.request.urlopen(request).read()

    sts = client(
        endpoint, "sts", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    session = sts.assume_role(RoleArn=HOGE_ARN, RoleSessionName="i-0123456789abcdef0")["Credentials"]
    print(json.dumps({k: session[k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}))


if __name__ == "__main__":
    main(sys.argv[1])
