"""`mlops-sandbox`: operator commands. Each subcommand calls one library function."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mlops_sandbox.config import get_settings


def _init_buckets(_: argparse.Namespace) -> int:
    from mlops_sandbox.storage import ensure_buckets

    result = ensure_buckets(list(get_settings().buckets.values()))
    print(json.dumps(result, indent=2))
    return 0


def _check_stack(_: argparse.Namespace) -> int:
    from mlops_sandbox.health import check_stack

    checks = check_stack()
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<24} {check.detail}")
    return 0 if all(c.ok for c in checks) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init-buckets", help="create the stack's S3 buckets (idempotent)").set_defaults(func=_init_buckets)
    sub.add_parser("check-stack", help="check that MinIO buckets and MLflow answer").set_defaults(func=_check_stack)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
