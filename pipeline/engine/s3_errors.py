"""What an S3 error response means, whichever client received it (boto3's in `pipeline.engine.s3`,
delta-rs's in `pipeline.engine.lake.errors`): the `ObjectStoreError` that names what failed and where,
and whether a later retry may help.

No botocore here: the lake imports this in local mode too, and botocore costs ~16 MB of memory in a
process that never talks to S3.
"""

from __future__ import annotations

from pipeline.engine.objects import ObjectNotFoundError, ObjectStoreError

# Error codes of responses that may succeed if tried again later. Any 5xx is transient too.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        # A re-delivered object replaced the one being read: a new attempt reads the new one whole.
        "PreconditionFailed",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
# What an operator should check for the usual permanent errors.
_HINTS = {
    "AccessDenied": "the credentials in use are not allowed to do this; check the IAM and bucket policies",
    "AllAccessDisabled": "all access to this bucket has been disabled",
    "NoSuchBucket": "the bucket does not exist; check the URL, AWS_ENDPOINT_URL and the region",
    "InvalidAccessKeyId": "the access key is not known to this endpoint; check the AWS credentials",
    "SignatureDoesNotMatch": "the secret key does not match the access key; check the AWS credentials",
    "ExpiredToken": "the session token has expired; refresh the AWS credentials",
    "PermanentRedirect": "the bucket is in another region; set AWS_REGION or AWS_DEFAULT_REGION",
    "AuthorizationHeaderMalformed": "the region is wrong for this bucket; set AWS_REGION or AWS_DEFAULT_REGION",
}


def s3_error(
    operation: str,
    bucket: str,
    key: str,
    code: str,
    *,
    status: int = 0,
    text: str = "",
    attempts: int | None = None,
    client: str = "",
    transient: bool = False,
) -> ObjectStoreError:
    """The `ObjectStoreError` for an S3 error response (`code`, HTTP `status`), from any client
    (boto3's here; `client` names another, e.g. the lake's delta-rs): what failed, where, and
    whether a later retry may help (`transient`: the client says so, whatever the status)."""
    by = f" by {client}" if client else ""
    head = f"S3 {operation}{by} failed for bucket {bucket!r}, key {key!r} (s3://{bucket}/{key}): {code}"
    head += f" (HTTP {status})" if status else ""
    head += f": {text}" if text else ""
    if code in _NOT_FOUND_CODES:
        return ObjectNotFoundError(f"{head}; the object does not exist", bucket=bucket, key=key, code=code)
    if transient or status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES:
        tried = f"after {attempts} attempt(s)" if attempts else "through the client's retries"
        return ObjectStoreError(
            f"{head}; still failing {tried}, a later retry may succeed",
            bucket=bucket,
            key=key,
            code=code,
            retryable=True,
        )
    hint = _HINTS.get(code, "retrying will not help")
    return ObjectStoreError(f"{head}; {hint} (not retried)", bucket=bucket, key=key, code=code)
