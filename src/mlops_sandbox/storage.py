"""S3 access with plain settings (endpoint, keys, region, path-style), so any S3 server can stand in."""

from __future__ import annotations

import json
import logging
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from mlops_sandbox.config import Settings, get_settings

log = logging.getLogger(__name__)


def s3_client(settings: Settings | None = None, config: Config | None = None):
    """A boto3 S3 client for the configured endpoint (`config` is merged over the defaults).

    A hung S3 server fails a call instead of hanging it: each attempt waits at most S3_CONNECT_TIMEOUT to
    connect and S3_READ_TIMEOUT for each read, and a request is tried S3_MAX_ATTEMPTS times in all, with
    botocore's exponential backoff between tries ('standard' mode). The error then names the endpoint
    (`ReadTimeoutError: Read timeout on endpoint URL: ...`).
    """
    settings = settings or get_settings()
    base = Config(
        s3={"addressing_style": settings.s3_addressing_style},
        retries={"total_max_attempts": settings.s3_max_attempts, "mode": "standard"},
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
    )
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
        config=base.merge(config) if config else base,
    )


def bucket_exists(client, bucket: str) -> bool:
    """Whether `bucket` exists; other errors (bad keys, no server) are raised, not hidden."""
    try:
        client.head_bucket(Bucket=bucket)
        return True
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket", "NotFound"}:
            return False
        raise


def ensure_buckets(buckets: list[str], client=None, wait_seconds: float = 60.0) -> dict[str, str]:
    """Create each bucket that is missing. Idempotent: existing buckets and their objects are kept.

    Waits up to `wait_seconds` for the S3 server to answer first. Returns `{bucket: "created"|"exists"}`.
    """
    if not buckets:
        raise ValueError("no bucket names given")
    invalid = [b for b in buckets if not (3 <= len(b) <= 63) or b != b.lower() or "_" in b]
    if invalid:
        raise ValueError(f"invalid S3 bucket names (3-63 chars, lower case, no '_'): {invalid}")
    client = client or s3_client()
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            client.list_buckets()
            break
        except EndpointConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    result: dict[str, str] = {}
    for bucket in buckets:
        if bucket_exists(client, bucket):
            result[bucket] = "exists"
            continue
        try:
            client.create_bucket(Bucket=bucket)
            result[bucket] = "created"
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                result[bucket] = "exists"
            else:
                raise
        log.info("bucket %s: %s", bucket, result[bucket])
    return result


def list_objects(client, bucket: str, prefix: str) -> list[dict]:
    """Every object under `prefix`, as the listing gives it (`Key`, `LastModified`: when it was stored, by the
    store's clock), sorted by key (all pages of the listing)."""
    objects: list[dict] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects += page.get("Contents", [])
    return sorted(objects, key=lambda o: o["Key"])


def list_keys(client, bucket: str, prefix: str) -> list[str]:
    """Every key under `prefix`, sorted (all pages of the listing)."""
    return [o["Key"] for o in list_objects(client, bucket, prefix)]


def put_json(client, bucket: str, key: str, value: dict) -> None:
    """Write `value` as a JSON object (non-JSON values such as datetimes as their str)."""
    body = json.dumps(value, indent=2, default=str).encode()
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")


def get_json(client, bucket: str, key: str, missing_ok: bool = False) -> dict | None:
    """Read a JSON object; a missing key raises, or gives None with `missing_ok`."""
    try:
        return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except client.exceptions.NoSuchKey:
        if missing_ok:
            return None
        raise
