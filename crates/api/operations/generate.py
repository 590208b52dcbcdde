#!/usr/bin/env python3
"""Writes the route tables in this folder from botocore's service models: one line per
operation, `METHOD /request/uri/{label} OperationName` (Query services: `POST / Action`), so the
control plane can name an AWS operation it does not implement (UnknownOperationException, 501). Data, not code: rerun after a
botocore upgrade (`.venv/bin/python crates/api/operations/generate.py`) and commit the result.

Signing name -> botocore service: the table file is named after the signing name the dispatcher
routes on."""

import sys
from pathlib import Path

import botocore.loaders

SERVICES = {
    "iot": "iot",
    "iotdata": "iot-data",
    "iotanalytics": "iotanalytics",
    "iotevents": "iotevents",
    "lambda": "lambda",
    "ioteventsdata": "iotevents-data",
    "sns": "sns",
}


def main() -> int:
    loader = botocore.loaders.Loader()
    here = Path(__file__).resolve().parent
    for signing_name, service in SERVICES.items():
        model = loader.load_service_model(service, "service-2")
        meta = model["metadata"]
        if meta["protocol"] not in ("rest-json", "query"):
            print(f"{service} is {meta['protocol']}, not rest-json or query", file=sys.stderr)
            return 1
        lines = [
            f"# {service} {meta['apiVersion']} (botocore {botocore.__version__}): METHOD URI Operation",
        ]
        for name, op in sorted(model["operations"].items()):
            http = op["http"]
            lines.append(f"{http['method']} {http['requestUri']} {name}")
        (here / f"{signing_name}.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
