"""The ``aws_iam`` attestation method, for AWS compute that is not a unique machine (Fargate and
ECS tasks, Lambda functions, CodeBuild jobs): the agent proves an IAM role, as Vault's IAM
auth does, by handing the server an ``sts:GetCallerIdentity`` request it signed with the role's
credentials, and the server has STS answer it.

- :mod:`.config`: both halves' ``plugin_data``;
- :mod:`.wire`: the payload (Vault's ``iam_request_*`` shape) and the checks made on the
  signed request before it is sent anywhere;
- :mod:`.sts`: sending it to the configured STS endpoint and reading the answer;
- :mod:`.server`, :mod:`.agent`: the two halves; :mod:`.plugin`: registration.
"""
