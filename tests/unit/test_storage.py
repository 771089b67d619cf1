import pytest
from botocore.stub import Stubber

from mlops_sandbox.config import Settings
from mlops_sandbox.storage import ensure_buckets, s3_client

pytestmark = pytest.mark.unit


@pytest.fixture
def client():
    return s3_client(Settings(_env_file=None))


def test_creates_only_missing_buckets(client):
    with Stubber(client) as stub:
        stub.add_response("list_buckets", {"Buckets": []})
        stub.add_response("head_bucket", {}, {"Bucket": "raw-data"})
        stub.add_client_error("head_bucket", "404", http_status_code=404, expected_params={"Bucket": "logs"})
        stub.add_response("create_bucket", {}, {"Bucket": "logs"})
        assert ensure_buckets(["raw-data", "logs"], client=client) == {"raw-data": "exists", "logs": "created"}
        stub.assert_no_pending_responses()


def test_access_errors_are_raised_not_taken_for_missing(client):
    from botocore.exceptions import ClientError

    with Stubber(client) as stub:
        stub.add_response("list_buckets", {"Buckets": []})
        stub.add_client_error("head_bucket", "403", http_status_code=403)
        with pytest.raises(ClientError):
            ensure_buckets(["raw-data"], client=client)


@pytest.mark.parametrize("names", [[], ["Upper"], ["under_score"], ["ab"]])
def test_rejects_invalid_bucket_names(client, names):
    with pytest.raises(ValueError):
        ensure_buckets(names, client=client)
