"""A nightly-size schemathesis run over every operation of the REST API, on a real appliance holding files, finished
jobs and comparisons (appliance.testing.populate): the examples, coverage, fuzzing and stateful phases, positive and
negative requests, MAX_EXAMPLES per operation and phase, cycle after cycle until MAX_SECONDS have passed.

Prints the operations, the requests sent, the answers that were 5xx, the answers that broke their documented schema,
and the other failures (an undocumented status or media type, a request that got no answer), then each distinct
failure with a curl command that reproduces it, and any traceback the server logged. Target: zero of each."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import schemathesis
from schemathesis.engine import events, from_schema

from appliance.testing import ServerProcess, fuzz_config, populate

MAX_EXAMPLES = 100
MAX_SECONDS = 1200


class Tally:
    def __init__(self) -> None:
        self.operations: set[str] = set()
        self.requests = 0
        self.server_errors = 0
        self.violations = 0
        self.other = 0
        self.kinds: Counter[tuple[str, str, str]] = Counter()
        self.examples: dict[tuple[str, str, str], str] = {}

    def add(self, event: events.EngineEvent) -> None:
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            if " /" in recorder.label:
                self.operations.add(recorder.label)
            for interaction in recorder.interactions.values():
                self.requests += 1
                self.server_errors += interaction.response is not None and interaction.response.status_code >= 500
            for checks in recorder.checks.values():
                for check in checks:
                    if check.failure_info is None:
                        continue
                    if check.name == "response_schema_conformance":
                        self.violations += 1
                    elif check.name != "not_a_server_error":
                        self.other += 1
                    failure = check.failure_info.failure
                    kind = (failure.operation or recorder.label, check.name, failure.title)
                    self.kinds[kind] += 1
                    self.examples.setdefault(kind, f"{failure.message[:400]}\n{check.failure_info.code_sample}")
        elif isinstance(event, events.NonFatalError):
            self.other += 1
            kind = (event.label, "error", type(event.value).__name__)
            self.kinds[kind] += 1
            self.examples.setdefault(kind, str(event.value)[:400])
        elif isinstance(event, events.FatalError):
            raise RuntimeError("schemathesis stopped") from event.exception


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="caesar-bench-") as tmp:
        work = Path(tmp)
        with ServerProcess(work / "home") as server:
            ids = populate(server, work / "data")
            settings = {**fuzz_config(server, ids, MAX_EXAMPLES, stateful=True), "max-time": MAX_SECONDS}
            schema = schemathesis.openapi.from_url(
                f"{server.url}/docs/openapi.json", config=schemathesis.Config.from_dict(settings)
            )
            tally = Tally()
            for event in from_schema(schema).execute():
                tally.add(event)
            logged = server.logged_errors()
        print(
            f"operations {len(tally.operations)}, requests {tally.requests}, 5xx {tally.server_errors}, "
            f"schema violations {tally.violations}, other failures {tally.other}"
        )
        for (operation, check, title), count in tally.kinds.most_common():
            print(f"\n{count} x {operation}: {check}: {title}")
            print("    " + tally.examples[(operation, check, title)].replace("\n", "\n    "))
        if logged:
            print(f"\nthe server logged {len(logged)} errors; the first: {logged[0]}")
