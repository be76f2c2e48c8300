"""Gives a fresh moto server (IAM checks off) the two accounts' deployers, as an administrator
of each account would be. Prints, as JSON, each account's deployer keys:
{"111122223333": {"AccessKeyId": ..., "SecretAccessKey": ...}, "444455556666": {...}}.

The tests then deploy deploy/cloudformation/*.yaml with the real aws CLI under those keys (the
README's two commands), take a session of the instance role the host template made (which
only EC2 may assume: with IAM checks still off, as the instance profile would hand it over),
and then turn IAM checks on (`checks-on`), so that the daemon's AssumeRole meets the trust
policy the target template wrote.

`inline-as-json ACCOUNT ROLE` works around moto 5.2.5: its CloudFormation stores a role's
inline policies (`Policies`, `AWS::IAM::Policy`) as Python objects, which its own access checks
cannot read (KeyError: 'policy_document'); it writes each one back, unchanged, as JSON, as IAM
holds it on AWS.

Usage: python deploy_accounts.py http://127.0.0.1:PORT
       python deploy_accounts.py http://127.0.0.1:PORT inline-as-json ACCOUNT ROLE
       python deploy_accounts.py http://127.0.0.1:PORT checks-on
"""

import ast
import json
import sys
import urllib.request

import boto3

ACCOUNTS = ("111122223333", "444455556666")
ADMIN = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


def iam_of(endpoint, account):
    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
    )

    def pin_account(request, **_):
        request.headers["x-moto-account-id"] = account

    iam.meta.events.register("before-sign.*.*", pin_account)
    return iam


def main(endpoint):
    keys = {}
    for account in ACCOUNTS:
        iam = iam_of(endpoint, account)
        iam.create_user(UserName="deployer")
        iam.put_user_policy(UserName="deployer", PolicyName="admin", PolicyDocument=ADMIN)
        key = iam.create_access_key(UserName="deployer")["AccessKey"]
        keys[account] = {k: key[k] for k in ("AccessKeyId", "SecretAccessKey")}
    print(json.dumps(keys))


def checks_on(endpoint):
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}, method="POST"
    )
    urllib.request.urlopen(request).read()


def inline_as_json(endpoint, account, role):
    iam = iam_of(endpoint, account)
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):
            document = ast.literal_eval(document)
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))


if __name__ == "__main__":
    if sys.argv[2:] == ["checks-on"]:
        checks_on(sys.argv[1])
    elif sys.argv[2:3] == ["inline-as-json"]:
        inline_as_json(sys.argv[1], sys.argv[3], sys.argv[4])
    else:
        main(sys.argv[1])
