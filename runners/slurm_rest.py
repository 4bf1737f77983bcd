"""slurmrestd as the Slurm runner's transport, for clusters that offer only REST (``transport = "rest"``).

Written for OpenAPI v0.0.38, what Debian 12's Slurm 22.05 serves (``api_version`` names another; v0.0.39 and later
changed field shapes, so they are refused until this module knows them). A JWT (``scontrol token``) is read from a
file or made by a command, sent with the user's name in slurmrestd's headers, and never logged nor put in an error.
Active jobs come from one ``GET /jobs`` per tick; a job the controller has forgotten, from slurmdbd's
``/slurmdb/.../job/{id}`` where it runs.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from runners import CannotStart
from runners.slurm import SlurmJob, SlurmUnavailable, Submission

KNOWN_VERSIONS = ("v0.0.38",)
TOKEN_SECONDS = 300.0  # a token made by the command is used this long before it is made again


class SlurmRest:
    def __init__(self, url: str, *, token_file: str = "", token_command: list[str] | None = None, user: str = "",
                 api_version: str = "v0.0.38", timeout: float = 30.0) -> None:  # fmt: skip
        if not url:
            raise ValueError('runners.slurm.rest_url is needed with transport = "rest" (e.g. http://slurm:6820)')
        if api_version not in KNOWN_VERSIONS:
            raise ValueError(f"runners.slurm.api_version {api_version!r} is not one this runner reads "
                             f"({', '.join(KNOWN_VERSIONS)})")  # fmt: skip
        if bool(token_file) == bool(token_command):
            raise ValueError("the rest transport needs exactly one of runners.slurm.token_file, token_command")
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.token_command = list(token_command or [])
        self.user = user or os.environ.get("USER", "")
        self.version = api_version
        self.timeout = timeout
        self._token: tuple[float, str] | None = None
        self._client = httpx.Client(timeout=timeout)
        self.calls: dict[str, int] = {}

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _token_now(self) -> str:
        if self.token_file:
            try:
                return Path(self.token_file).read_text().strip().removeprefix("SLURM_JWT=")
            except OSError as exc:
                raise SlurmUnavailable(
                    f"the Slurm token file {self.token_file} cannot be read: {exc.strerror}"
                ) from exc
        now = time.monotonic()
        if self._token and now - self._token[0] < TOKEN_SECONDS:
            return self._token[1]
        try:
            made = subprocess.run(self.token_command, capture_output=True, text=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmUnavailable(f"the Slurm token command {self.token_command[0]} failed: {exc}") from exc
        if made.returncode != 0:  # its output is not shown: it may hold the token
            raise SlurmUnavailable(f"the Slurm token command {self.token_command[0]} failed "
                                   f"(exit code {made.returncode})")  # fmt: skip
        token = made.stdout.strip().split("=", 1)[-1]
        self._token = (now, token)
        return token

    def _call(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        endpoint = path.split("/")[3]  # ping, jobs, job
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        headers = {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self._token_now()}
        try:
            answer = self._client.request(method, f"{self.url}{path}", headers=headers, **options)
        except httpx.HTTPError as exc:
            raise SlurmUnavailable(f"slurmrestd at {self.url} does not answer: {type(exc).__name__}") from exc
        if answer.status_code in (401, 403):
            self._token = None
            raise SlurmUnavailable(f"slurmrestd refused the token of {self.user} (HTTP {answer.status_code})")
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if answer.status_code >= 500 and not body.get("errors"):
            raise SlurmUnavailable(f"slurmrestd failed (HTTP {answer.status_code})")
        return body

    # -- the transport ---------------------------------------------------------------------------------------

    def ping(self) -> None:
        body = self._call("GET", f"/slurm/{self.version}/ping")
        pings = body.get("pings") or []
        if not pings or any(ping.get("ping") != "UP" for ping in pings):
            raise SlurmUnavailable(f"the Slurm controller does not answer slurmrestd: {_errors(body) or pings}")

    def submit(self, job: Submission) -> str:
        fields: dict[str, Any] = {
            "name": job.name, "current_working_directory": job.workdir, "standard_output": job.output,
            "standard_error": job.output, "tasks": job.tasks, "cpus_per_task": job.cpus_per_task,
            "environment": {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")},
        }  # fmt: skip
        if job.memory_mb:
            fields["memory_per_node"] = job.memory_mb
        if job.time_minutes:
            fields["time_limit"] = job.time_minutes
        if job.gpus:
            fields["tres_per_job"] = f"gres:gpu:{job.gpus}"
        for key, value in (("partition", job.partition), ("account", job.account), ("qos", job.qos)):
            if value:
                fields[key] = value
        try:
            body = self._call("POST", f"/slurm/{self.version}/job/submit", json={"job": fields, "script": job.script})
        except SlurmUnavailable as exc:
            raise CannotStart(str(exc)) from exc
        if body.get("errors") or "job_id" not in body:
            raise CannotStart(f"Slurm refused the job: {_errors(body) or 'no job id in the answer'}")
        return str(body["job_id"])

    def jobs(self, ids: list[str]) -> dict[str, SlurmJob]:
        if not ids:
            return {}
        body = self._call("GET", f"/slurm/{self.version}/jobs")
        if body.get("errors"):
            raise SlurmUnavailable(f"slurmrestd could not list the jobs: {_errors(body)}")
        wanted = set(ids)
        found = {}
        for record in body.get("jobs") or []:
            id = str(record.get("job_id"))
            if id in wanted:
                found[id] = _job(id, record.get("job_state", "UNKNOWN"), record.get("state_reason"),
                                 record.get("exit_code"))  # fmt: skip
        for id in wanted - found.keys():
            body = self._call("GET", f"/slurmdb/{self.version}/job/{id}")
            for record in body.get("jobs") or []:  # only where slurmdbd runs; else the controller knew it last
                state = (record.get("state") or {}).get("current", "UNKNOWN")
                exit_code = record.get("exit_code") or {}
                code = exit_code.get("return_code")
                signal = (exit_code.get("signal") or {}).get("signal_id")
                found[id] = SlurmJob(id, str(state).split()[0], None, code, signal or None)
        return found

    def cancel(self, id: str, force: bool) -> None:
        body = self._call("DELETE", f"/slurm/{self.version}/job/{id}", params={"signal": "SIGKILL" if force
                                                                                else "SIGTERM"})  # fmt: skip
        if body.get("errors") and not force:  # a job still pending takes no signal: it is taken out of the queue
            self._call("DELETE", f"/slurm/{self.version}/job/{id}")


def _job(id: str, state: str, reason: str | None, wait_status: Any) -> SlurmJob:
    """v0.0.38 gives the batch script's wait status: code in the high byte, signal in the low one."""
    code = signal = None
    if isinstance(wait_status, int) and state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
        code, signal = wait_status >> 8, (wait_status & 0x7F) or None
    reason = None if reason in (None, "", "None") else reason
    return SlurmJob(id, str(state).split()[0], reason, code, signal)


def _errors(body: dict[str, Any]) -> str:
    return "; ".join(str(error.get("error") or error.get("description") or error) for error in body.get("errors") or [])
