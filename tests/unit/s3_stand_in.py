"""An in-memory S3 for the unit tests (test_monitor, test_registry_pipeline): the calls the library makes,
over a dict of objects (one namespace for every bucket: the tests' keys differ)."""

import io


class FakeS3:
    """Listing and reading."""

    class exceptions:  # noqa: N801 - boto3's name
        NoSuchKey = KeyError

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def get_paginator(self, _):
        return self

    def paginate(self, Bucket, Prefix):  # noqa: N803 - boto3's names
        yield {"Contents": [{"Key": k} for k in sorted(self.objects) if k.startswith(Prefix)]}

    def get_object(self, Bucket, Key):  # noqa: N803
        return {"Body": io.BytesIO(self.objects[Key])}


class WritableS3(FakeS3):
    """... and the writes."""

    def put_object(self, Bucket, Key, Body, ContentType=None):  # noqa: N803
        self.objects[Key] = Body

    def delete_object(self, Bucket, Key):  # noqa: N803
        self.objects.pop(Key, None)
