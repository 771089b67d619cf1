"""An in-memory S3 for the unit tests (test_monitor, test_registry_pipeline): the calls the library makes,
over a dict of objects (one namespace for every bucket: the tests' keys differ)."""

import io
from datetime import UTC, datetime

NEVER = datetime.min.replace(tzinfo=UTC)


class FakeS3:
    """Listing and reading."""

    class exceptions:  # noqa: N801 - boto3's name
        NoSuchKey = KeyError

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects
        self.stored: dict[str, datetime] = {}  # when put_object stored a key (else it lists as stored at NEVER)

    def get_paginator(self, _):
        return self

    def paginate(self, Bucket, Prefix):  # noqa: N803 - boto3's names
        keys = [k for k in sorted(self.objects) if k.startswith(Prefix)]
        yield {"Contents": [{"Key": k, "LastModified": self.stored.get(k, NEVER)} for k in keys]}

    def get_object(self, Bucket, Key):  # noqa: N803
        return {"Body": io.BytesIO(self.objects[Key])}


class WritableS3(FakeS3):
    """... and the writes."""

    def put_object(self, Bucket, Key, Body, ContentType=None):  # noqa: N803
        self.objects[Key] = Body
        self.stored[Key] = datetime.now(UTC)

    def delete_object(self, Bucket, Key):  # noqa: N803
        self.objects.pop(Key, None)
