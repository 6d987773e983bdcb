"""Validates EMF lines: the JSON schema of the document structure, then the specification's
references into the root that a schema cannot state. Usage: validate.py SCHEMA LINES_FILE.
A line without `_aws` is a plain JSON log event, not an EMF document: CloudWatch Logs extracts
no metric from it ([cloudwatch] detail = "chain" writes a healthy hop's figures so); it only has
to be a JSON object. Prints one line per problem and exits 1 if there is any."""

import json
import math
import sys

import jsonschema

MAX_VALUES = 100


def problems(doc):
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                if not isinstance(doc.get(name), str):
                    yield f"dimension {name!r} is not a string member of the root"
        for metric in directive["Metrics"]:
            name = metric["Name"]
            value = doc.get(name)
            values = value if isinstance(value, list) else [value]
            if not values or len(values) > MAX_VALUES:
                yield f"metric {name!r} has {len(values)} values (1 to {MAX_VALUES})"
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    yield f"metric {name!r} holds {v!r}, not a finite number"


def main():
    schema = json.load(open(sys.argv[1]))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    bad = 0
    plain = 0
    lines = [l for l in open(sys.argv[2]).read().splitlines() if l.strip()]
    for number, line in enumerate(lines, 1):
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"line {number}: not JSON: {e}")
            bad += 1
            continue
        if isinstance(doc, dict) and "_aws" not in doc:
            plain += 1
            continue
        found = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
        if not found:
            found = list(problems(doc))
        for p in found:
            print(f"line {number}: {p}")
        bad += bool(found)
    print(f"{len(lines)} lines ({plain} plain JSON, no metric), {bad} invalid")
    sys.exit(1 if bad or not lines else 0)


if __name__ == "__main__":
    main()
